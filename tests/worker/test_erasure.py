"""Erasure: one customer's personal data leaves every record; ids, states and dedupe stay.

Real Redis and the real stores: events are accepted with the subjects the edge computes
(``subjects_of`` + the keyed hash), units are finished through the ledger scripts, dead
letters discarded through theirs; then every key under the test's prefix, of every type,
is searched for the address.
"""

from __future__ import annotations

import json
import time

import pytest

from tasks.bookkeeping import side_records
from tasks.sources.common import SourceKeys
from tasks.sources.coniq_outbound import SOURCE as CONIQ_OUTBOUND
from tasks.sources.coniq_outbound import OutboundKeys
from tests.lifecycle_checks import traces_of
from worker.stores.dead_letters import DeadLetters
from worker.stores.erasure import Erasure, InFlightError
from worker.stores.inbox import Inbox, InboxOutcome
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState
from worker.stores.outbox import Outbox
from worker.stores.personal_data import SubjectHasher, SubjectKind, subjects_of

ADDRESS = "ada@example.com"
HASHER = SubjectHasher(b"test-erasure-key-0123456789abcdef")


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def stores(redis_client, keys):
    return Inbox(redis_client, keys), Ledger(redis_client, keys), DeadLetters(redis_client, keys)


@pytest.fixture
def outbox(redis_client, keys) -> Outbox:
    return Outbox(redis_client, keys)


@pytest.fixture
def erasure(redis_client, keys) -> Erasure:
    return Erasure(redis_client, keys, HASHER, side_records(keys))


def grant(event_id: str, email: str, quantity: int = 2, last_name: str = "Lovelace") -> dict:
    return {
        "id": event_id,
        "type": "reward.granted",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme",
        "data": {
            "recipient": {"email": email, "first_name": "Ada", "last_name": last_name},
            "rewards": [{"reward_code": "GIFT10", "quantity": quantity}],
            "reference": "campaign-42",
        },
    }


def accept(
    inbox: Inbox, outbox: Outbox, document: dict, source: str, matches: list[dict]
) -> InboxOutcome:
    subjects = subjects_of(source, document["type"], document)
    outcome = inbox.accept(
        event_id=document["id"],
        source=source,
        event_type=document["type"],
        fingerprint="fp-" + document["id"],
        body=json.dumps(document, sort_keys=True),
        units=[UnitSpec(line=0, index=i, match=m) for i, m in enumerate(matches)],
        now=time.time(),
        stale_after=45.0,
        subjects=[HASHER.digest(kind, value) for kind, value in subjects],
    )
    # what the relay does once it has published them
    outbox.mark_dispatched([f"{document['id']}:0:{i}" for i in range(len(matches))], time.time())
    return outcome


# How an attempt that ends a unit in each state is recorded.
ENDING = {
    UnitState.FULFILLED: AttemptOutcome.FULFILLED,
    UnitState.IGNORED: AttemptOutcome.IGNORED,
    UnitState.DEAD_LETTERED: AttemptOutcome.DEAD_LETTER,
    UnitState.UNROUTABLE: AttemptOutcome.UNROUTABLE,
}


def finish(ledger: Ledger, unit_id: str, state: UnitState, **extra) -> None:
    now = time.time()
    begun = ledger.begin(unit_id, now=now, lease_seconds=60.0)
    assert begun.decision.proceeds
    record = AttemptRecord(
        attempt=begun.attempt, at=now, mode=begun.decision, outcome=ENDING[state]
    )
    assert ledger.finish(
        unit_id, begun.attempt, state, record, now=now, next_check_at=None, **extra
    )


@pytest.fixture
def ada_and_bob(redis_client, keys, stores, outbox) -> None:
    """Ada: a grant of two units (one fulfilled, one dead-lettered and discarded with her
    address in the operator's reason), a Coniq customer.updated (ignored), a queued
    Coniq loop-back record and an Ignico rejection note naming her. Bob: one grant."""
    inbox, ledger, letters = stores
    assert accept(inbox, outbox, grant("evt_ada", "Ada@Example.com"), "internal", [{}, {}]) is (
        InboxOutcome.ACCEPTED
    )
    finish(ledger, "evt_ada:0:0", UnitState.FULFILLED, fields={"provider_ref": "ifg-1"})
    letter = {"id": "evt_ada:0:1", "event_id": "evt_ada", "status": "waiting", "reason": "x"}
    finish(ledger, "evt_ada:0:1", UnitState.DEAD_LETTERED, dead_letter=letter)
    assert letters.discard("evt_ada:0:1", now=time.time(), reason=f"duplicate of {ADDRESS}")
    customer = {
        "id": "evt_cus",
        "type": "customer.updated",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme",
        "data": {"id": "cus_9", "email": ADDRESS, "first_name": "Ada"},
    }
    scalars = {"id": "cus_9", "email": ADDRESS, "first_name": "Ada"}
    accept(inbox, outbox, customer, "coniq", [scalars])
    finish(ledger, "evt_cus:0:0", UnitState.IGNORED)
    redis_client.sadd(OutboundKeys(keys, CONIQ_OUTBOUND).pending, "evt_ada:0:0")
    reveal = {"action": "reveal", "unit_id": "evt_ada:0:0", "actor": "op", "reason": ADDRESS}
    redis_client.rpush(keys.code_reveals, json.dumps(reveal))
    redis_client.hset(SourceKeys(keys, "ignico").rejected, "evt_ada", f"mail {ADDRESS} bounced")
    accept(inbox, outbox, grant("evt_bob", "bob@example.com", 1, "Byron"), "internal", [{}])


@pytest.mark.usefixtures("ada_and_bob")
def test_erasure_leaves_no_trace_of_the_address_in_any_redis_value(redis_client, keys, erasure):
    # given Ada's data spread over events, units, dead letters, logs and side records
    assert traces_of(redis_client, keys.prefix, ADDRESS)
    bob_before = redis_client.hget(keys.event("evt_bob"), "body")
    # when her email is erased (another spelling of the same address)
    report = erasure.erase(SubjectKind.EMAIL, "  ADA@example.COM", actor="test")
    # then no key of any type under the prefix holds the address, nor her name
    assert traces_of(redis_client, keys.prefix, ADDRESS) == []
    assert traces_of(redis_client, keys.prefix, "Lovelace") == []
    # and the counts say what changed
    assert report.counts["events"] == 2
    assert report.counts["units"] == 1  # the customer.updated unit matched on her email
    assert report.counts["dead_letters"] == 1 and report.counts["dead_letter_log"] == 1
    assert report.counts["code_reveal_log"] == 1
    assert report.counts["source_progress"] == 1 and report.counts["coniq_loopback"] == 1
    assert report.counts["index_entries"] == 2
    # and ids, states, provider references and the reward lines stay for audit
    body = json.loads(redis_client.hget(keys.event("evt_ada"), "body"))
    assert body["id"] == "evt_ada" and body["data"]["erased"] is True
    assert body["data"]["rewards"] == [{"reward_code": "GIFT10", "quantity": 2}]
    assert redis_client.hget(keys.unit("evt_ada:0:0"), "state") == b"fulfilled"
    assert redis_client.hget(keys.unit("evt_ada:0:0"), "provider_ref") == b"ifg-1"
    assert json.loads(redis_client.hget(keys.unit("evt_cus:0:0"), "match")) == {}
    # and Bob is untouched
    assert redis_client.hget(keys.event("evt_bob"), "body") == bob_before


@pytest.mark.usefixtures("ada_and_bob")
def test_a_redelivery_after_erasure_is_still_a_duplicate(
    redis_client, keys, stores, erasure, outbox
):
    # given Ada's data erased
    inbox, _, _ = stores
    erasure.erase(SubjectKind.EMAIL, ADDRESS, actor="test")
    # when her grant is delivered again, byte for byte
    outcome = accept(inbox, outbox, grant("evt_ada", "Ada@Example.com"), "internal", [{}, {}])
    # then it is a duplicate and nothing of hers is stored again
    assert outcome is InboxOutcome.DUPLICATE
    assert traces_of(redis_client, keys.prefix, ADDRESS) == []


@pytest.mark.usefixtures("ada_and_bob")
def test_the_erasure_is_audited_under_the_keyed_hash_only(redis_client, keys, erasure):
    # when
    report = erasure.erase(SubjectKind.EMAIL, ADDRESS, actor="test")
    # then the audit log names the subject by its keyed hash, with the counts
    (entry,) = erasure.audit_log()
    assert entry["subject"] == HASHER.digest(SubjectKind.EMAIL, ADDRESS) == report.subject
    assert entry["actor"] == "test" and entry["events"] == 2 and entry["complete"] is True
    assert ADDRESS not in json.dumps(entry).casefold()
    # and another key gives another hash (the address cannot be tested without the key)
    assert SubjectHasher(b"another-key").digest(SubjectKind.EMAIL, ADDRESS) != report.subject


@pytest.mark.usefixtures("ada_and_bob")
def test_erasing_by_coniq_customer_id_also_removes_the_address_that_event_carried(
    redis_client, keys, erasure
):
    # when Ada is erased by her Coniq customer id
    report = erasure.erase(SubjectKind.CUSTOMER_ID, "cus_9", actor="test")
    # then the customer.updated event (indexed by that id) holds neither id nor address
    body = redis_client.hget(keys.event("evt_cus"), "body").decode()
    assert "cus_9" not in body and ADDRESS not in body
    assert report.counts["events"] == 1


def test_units_in_flight_refuse_the_erasure_and_nothing_is_erased(
    redis_client, keys, stores, erasure, outbox
):
    # given one of Eve's events fulfilled and another still pending
    inbox, ledger, _ = stores
    accept(inbox, outbox, grant("evt_e1", "eve@example.com", 1), "internal", [{}])
    finish(ledger, "evt_e1:0:0", UnitState.FULFILLED)
    accept(inbox, outbox, grant("evt_e2", "eve@example.com", 1), "internal", [{}])
    # when her erasure is asked for
    with pytest.raises(InFlightError) as refused:
        erasure.erase(SubjectKind.EMAIL, "eve@example.com", actor="test")
    # then the pending unit is named, and nothing was erased (not even the finished event)
    assert refused.value.units == {"evt_e2:0:0": "pending"}
    for event_id in ("evt_e1", "evt_e2"):
        assert b"eve@example.com" in redis_client.hget(keys.event(event_id), "body")
    assert erasure.audit_log() == []


def test_an_unknown_customer_erases_nothing_and_is_still_audited(redis_client, keys, erasure):
    # when
    report = erasure.erase(SubjectKind.EMAIL, "nobody@example.com", actor="test")
    # then
    assert set(report.counts.values()) == {0}
    assert len(erasure.audit_log()) == 1


def test_another_person_the_event_names_keeps_their_index_entry(
    redis_client, keys, stores, erasure, outbox
):
    # given a grant for Ada that also names a referrer
    inbox, ledger, _ = stores
    document = grant("evt_ref", ADDRESS, 1)
    document["data"]["referrer"] = {"email": "ref@example.com"}
    accept(inbox, outbox, document, "internal", [{}])
    finish(ledger, "evt_ref:0:0", UnitState.FULFILLED)
    referrer = HASHER.digest(SubjectKind.EMAIL, "ref@example.com")
    # when Ada is erased
    erasure.erase(SubjectKind.EMAIL, ADDRESS, actor="test")
    # then the event still lists the referrer (retention expires their index with it)
    assert redis_client.hget(keys.event("evt_ref"), "subjects") == referrer.encode()
    assert redis_client.sismember(keys.subject(referrer), "evt_ref")
    assert not redis_client.exists(keys.subject(HASHER.digest(SubjectKind.EMAIL, ADDRESS)))
