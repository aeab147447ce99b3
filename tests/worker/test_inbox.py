"""Inbox.accept: the edge's one atomic write (claim, event, units, live set, outbox).

The relay's side of a redelivery (``Outbox.mark_dispatched``) is exercised here too: it
decides when a redelivered event stops being PENDING.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from worker.stores.inbox import Inbox, InboxOutcome
from worker.stores.keys import Keys
from worker.stores.models import UnitSpec
from worker.stores.outbox import Outbox

NOW = 1_800_000_000.0
STALE_AFTER = 45.0


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def inbox(redis_client, keys) -> Inbox:
    return Inbox(redis_client, keys)


@pytest.fixture
def outbox(redis_client, keys) -> Outbox:
    return Outbox(redis_client, keys)


def accept(
    inbox: Inbox,
    event_id: str,
    *,
    units: int = 2,
    source: str = "internal",
    body: dict | None = None,
    now: float = NOW,
) -> InboxOutcome:
    document = body if body is not None else {"id": event_id, "data": {"n": units}}
    raw = json.dumps(document, sort_keys=True)
    return inbox.accept(
        event_id=event_id,
        source=source,
        event_type="reward.granted",
        fingerprint=hashlib.sha256(raw.encode()).hexdigest(),
        body=raw,
        units=[UnitSpec(line=0, index=i, match={"reward_code": "GIFT10"}) for i in range(units)],
        now=now,
        stale_after=STALE_AFTER,
    )


def outbox_units(redis_client, keys) -> list[str]:
    return [fields[b"unit"].decode() for _id, fields in redis_client.xrange(keys.outbox)]


def test_accept_stores_event_units_live_set_and_outbox(inbox, redis_client, keys):
    # given a new event with two units
    # when
    outcome = accept(inbox, "evt_1", units=2)
    # then the event is claimed
    assert outcome is InboxOutcome.ACCEPTED
    unit_ids = ["evt_1:0:0", "evt_1:0:1"]
    # and each unit has a pending ledger entry
    for uid in unit_ids:
        unit = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.unit(uid)).items()}
        assert unit["state"] == "pending"
        assert unit["attempts"] == "0"
        assert unit["event_id"] == "evt_1"
        assert unit["source"] == "internal"
        assert json.loads(unit["match"]) == {"reward_code": "GIFT10"}
        assert "dispatched_at" not in unit
    # and is live, due when it would be stale
    assert redis_client.zrange(keys.live, 0, -1, withscores=True) == [
        (uid.encode(), NOW + STALE_AFTER) for uid in unit_ids
    ]
    # and is queued once in the outbox, in order
    assert outbox_units(redis_client, keys) == unit_ids
    # and the event hash counts undispatched units and is indexed
    assert redis_client.hget(keys.event("evt_1"), "undispatched") == b"2"
    assert redis_client.zscore(keys.events_index, "evt_1") == NOW


def test_get_returns_the_stored_event(inbox):
    # given an accepted event
    body = {"id": "evt_get", "data": {"reference": "campaign-42"}}
    accept(inbox, "evt_get", units=3, body=body, source="coniq")
    # when
    event = inbox.get("evt_get")
    # then
    assert event is not None
    assert (event.id, event.source, event.type) == ("evt_get", "coniq", "reward.granted")
    assert event.received_at == NOW
    assert event.unit_ids == ("evt_get:0:0", "evt_get:0:1", "evt_get:0:2")
    assert event.body == body


def test_get_returns_none_for_unknown_event(inbox):
    # given nothing stored
    # when / then
    assert inbox.get("evt_nope") is None


def test_redelivery_is_pending_until_every_unit_is_dispatched_then_duplicate(inbox, outbox):
    # given an accepted event with two units
    accept(inbox, "evt_dup", units=2)
    # when it is redelivered before any publish
    # then it is still pending
    assert accept(inbox, "evt_dup", units=2) is InboxOutcome.PENDING
    # when one unit is published
    assert outbox.mark_dispatched(["evt_dup:0:0"], NOW + 1)[0] is True
    # then still pending
    assert accept(inbox, "evt_dup", units=2) is InboxOutcome.PENDING
    # when the last unit is published
    assert outbox.mark_dispatched(["evt_dup:0:1"], NOW + 1)[0] is True
    # then a redelivery is a duplicate
    assert accept(inbox, "evt_dup", units=2) is InboxOutcome.DUPLICATE


def test_redelivery_stores_nothing_new(inbox, redis_client, keys):
    # given an accepted event
    accept(inbox, "evt_once", units=2)
    # when it is delivered again
    accept(inbox, "evt_once", units=2, now=NOW + 100)
    # then no unit, outbox entry or live score changed
    assert len(outbox_units(redis_client, keys)) == 2
    assert redis_client.zscore(keys.live, "evt_once:0:0") == NOW + STALE_AFTER
    assert inbox.get("evt_once").received_at == NOW


def test_mark_dispatched_counts_each_unit_once(inbox, outbox, redis_client, keys):
    # given an accepted event with two units
    accept(inbox, "evt_mark", units=2)
    # when one unit is marked twice
    first = outbox.mark_dispatched(["evt_mark:0:0"], NOW + 1)[0]
    second = outbox.mark_dispatched(["evt_mark:0:0"], NOW + 2)[0]
    # then only the first counts
    assert (first, second) == (True, False)
    assert redis_client.hget(keys.event("evt_mark"), "undispatched") == b"1"
    assert redis_client.hget(keys.unit("evt_mark:0:0"), "dispatched_at") == str(NOW + 1).encode()
    assert accept(inbox, "evt_mark", units=2) is InboxOutcome.PENDING


def test_mark_dispatched_of_unknown_unit_is_false_and_writes_nothing(outbox, redis_client, keys):
    # given no such unit
    # when
    done = outbox.mark_dispatched(["evt_ghost:0:0"], NOW)[0]
    # then
    assert done is False
    assert redis_client.exists(keys.unit("evt_ghost:0:0")) == 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"body": {"id": "evt_c", "data": {"n": 999}}}, InboxOutcome.CONFLICT),
        ({"source": "coniq"}, InboxOutcome.CONFLICT),
        ({}, InboxOutcome.PENDING),
    ],
    ids=["other-body", "other-source", "same"],
)
def test_same_id_with_other_body_or_source_conflicts(inbox, redis_client, keys, change, expected):
    # given an accepted event
    accept(inbox, "evt_c", units=1)
    # when the id arrives again, changed or not
    outcome = accept(inbox, "evt_c", units=1, **change)
    # then only an identical delivery is treated as a redelivery
    assert outcome is expected
    # and the original event is kept as it was
    assert inbox.get("evt_c").source == "internal"
    assert inbox.get("evt_c").body == {"id": "evt_c", "data": {"n": 1}}


def test_conflict_is_reported_even_after_dispatch(inbox, outbox):
    # given an accepted, fully dispatched event
    accept(inbox, "evt_cd", units=1)
    outbox.mark_dispatched(["evt_cd:0:0"], NOW + 1)
    # when the id is reused with another body
    outcome = accept(inbox, "evt_cd", units=1, body={"id": "evt_cd", "other": True})
    # then
    assert outcome is InboxOutcome.CONFLICT


def test_zero_unit_event_is_duplicate_on_redelivery_at_once(inbox, redis_client, keys):
    # given an event that asks for nothing (recorded, nothing to do)
    first = accept(inbox, "evt_zero", units=0)
    # when it is redelivered
    second = accept(inbox, "evt_zero", units=0)
    # then nothing waits on a publish
    assert (first, second) == (InboxOutcome.ACCEPTED, InboxOutcome.DUPLICATE)
    assert inbox.get("evt_zero").unit_ids == ()
    assert redis_client.xlen(keys.outbox) == 0
    assert redis_client.zcard(keys.live) == 0


def test_concurrent_accepts_of_one_id_claim_it_exactly_once(redis_client, keys):
    # given 20 threads delivering the same event at once, each with its own Inbox
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    outcomes: list[InboxOutcome] = []
    lock = threading.Lock()

    def deliver() -> None:
        inbox = Inbox(redis_client, keys)
        barrier.wait()
        outcome = accept(inbox, "evt_race", units=3, now=time.time())
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=deliver) for _ in range(threads_count)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # then exactly one delivery was accepted, the rest are redeliveries
    assert outcomes.count(InboxOutcome.ACCEPTED) == 1
    assert outcomes.count(InboxOutcome.PENDING) == threads_count - 1
    # and exactly one set of units exists
    assert outbox_units(redis_client, keys) == ["evt_race:0:0", "evt_race:0:1", "evt_race:0:2"]
    assert redis_client.zcard(keys.live) == 3
    assert redis_client.hget(keys.event("evt_race"), "undispatched") == b"3"


def test_concurrent_accepts_through_one_inbox_share_round_trips_and_claim_once(redis_client, keys):
    # given 20 threads of one process delivering 10 events, two deliveries of each, at
    # once through one Inbox (whose writer groups concurrent calls into one pipeline)
    inbox = Inbox(redis_client, keys)
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    outcomes: dict[str, list[InboxOutcome]] = {f"evt_g{i}": [] for i in range(10)}

    def deliver(i: int) -> None:
        event_id = f"evt_g{i % 10}"
        barrier.wait()
        outcome = accept(inbox, event_id, units=1, now=time.time())
        outcomes[event_id].append(outcome)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(threads_count)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # then each event was claimed by exactly one of its deliveries
    for event_outcomes in outcomes.values():
        assert sorted(event_outcomes) == [InboxOutcome.ACCEPTED, InboxOutcome.PENDING]
    assert len(outbox_units(redis_client, keys)) == 10
