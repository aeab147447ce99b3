"""Retention: a finished event's data expires on its own; the dedupe marker stays, small.

Real Redis: units are taken to their end through the real ledger and dead-letter
scripts, events are closed by the real close script, and expiry is Redis's own (a
retention of one second, waited out).
"""

from __future__ import annotations

import json
import time

import pytest

from worker.stores.dead_letters import DeadLetters
from worker.stores.inbox import Inbox, InboxOutcome
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState
from worker.stores.retention import CloseResult, Retention, RetentionPolicy, stored_bytes

LEASE = 60.0
FINGERPRINT = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
MARKER_BYTES_MAX = 200  # the goal for what one event costs after retention
# An event id as long as the ULID-style ids of the samples: the marker's size grows with it.
EVENT_ID = "evt_01JEXAMPLE0RETENTION000000"


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def stores(redis_client, keys):
    return Inbox(redis_client, keys), Ledger(redis_client, keys), DeadLetters(redis_client, keys)


def retention(redis_client, keys, seconds: int = 1, dedupe: int = 60) -> Retention:
    return Retention(redis_client, keys, RetentionPolicy(seconds, dedupe))


def accept(inbox: Inbox, event_id: str = EVENT_ID, units: int = 2, **extra) -> InboxOutcome:
    return inbox.accept(
        event_id=event_id,
        source="internal",
        event_type="reward.granted",
        fingerprint=extra.pop("fingerprint", FINGERPRINT),
        body=json.dumps({"id": event_id, "data": {"recipient": {"email": "ada@example.com"}}}),
        units=[UnitSpec(line=0, index=i, match={"reward_code": "GIFT10"}) for i in range(units)],
        now=time.time(),
        stale_after=45.0,
        **extra,
    )


# How an attempt that ends a unit in each state is recorded.
ENDING = {
    UnitState.FULFILLED: AttemptOutcome.FULFILLED,
    UnitState.IGNORED: AttemptOutcome.IGNORED,
    UnitState.DEAD_LETTERED: AttemptOutcome.DEAD_LETTER,
    UnitState.UNROUTABLE: AttemptOutcome.UNROUTABLE,
}


def finish(ledger: Ledger, unit_id: str, state: UnitState, **extra) -> None:
    now = time.time()
    begun = ledger.begin(unit_id, now=now, lease_seconds=LEASE)
    assert begun.decision.proceeds
    record = AttemptRecord(
        attempt=begun.attempt, at=now, mode=begun.decision, outcome=ENDING[state]
    )
    assert ledger.finish(
        unit_id, begun.attempt, state, record, now=now, next_check_at=None, **extra
    )


def event_keys(keys: Keys, event_id: str, units: int) -> list[str]:
    names = [keys.event(event_id)]
    for i in range(units):
        uid = f"{event_id}:0:{i}"
        names += [keys.unit(uid), keys.attempts(uid), keys.dead_letter(uid)]
    return names


def wait_until_gone(redis_client, names: list[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while redis_client.exists(*names) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_an_event_closes_only_when_its_last_unit_is_fulfilled(redis_client, keys, stores):
    # given an event of two units, one fulfilled
    inbox, ledger, _ = stores
    accept(inbox)
    finish(ledger, f"{EVENT_ID}:0:0", UnitState.FULFILLED)
    keeper = retention(redis_client, keys)
    # when retention looks at the queued event
    # then it stays open (its other unit is pending), and nothing expires
    assert keeper.close_waiting(now=time.time()) == {"open": 1}
    assert redis_client.ttl(keys.event(EVENT_ID)) == -1
    # when the last unit is fulfilled
    finish(ledger, f"{EVENT_ID}:0:1", UnitState.FULFILLED)
    assert redis_client.sismember(keys.closing, EVENT_ID)
    # then the event closes: every key of it expires, the marker is written, the queue
    # and the index are empty
    assert keeper.close_waiting(now=time.time()) == {"fulfilled": 1}
    for name in event_keys(keys, EVENT_ID, 2):
        assert redis_client.ttl(name) in (1, -2), name
    assert keeper.marker(EVENT_ID) is not None
    assert 55 <= redis_client.ttl(keys.seen(EVENT_ID)) <= 60
    assert redis_client.scard(keys.closing) == 0
    assert redis_client.zscore(keys.events_index, EVENT_ID) is None


def test_after_retention_only_a_small_marker_remains_and_deduplicates(redis_client, keys, stores):
    # given a finished event closed with a one-second retention
    inbox, ledger, _ = stores
    accept(inbox)
    for i in range(2):
        finish(ledger, f"{EVENT_ID}:0:{i}", UnitState.FULFILLED)
    everything = event_keys(keys, EVENT_ID, 2)
    before = stored_bytes(redis_client, [*everything, keys.seen(EVENT_ID)])
    redis_client.delete(keys.outbox)  # what the relay does once it has published them
    retention(redis_client, keys).close_waiting(now=time.time())
    # when the retention period passes
    wait_until_gone(redis_client, everything)
    # then the event, its units and attempts are gone, the marker is all that is left
    assert redis_client.exists(*everything) == 0
    left = [k.decode() for k in redis_client.scan_iter(match=f"{keys.prefix}:*")]
    assert left == [keys.seen(EVENT_ID)]
    after = stored_bytes(redis_client, left)
    assert after <= MARKER_BYTES_MAX < before
    # and a redelivery of the same body is a duplicate, another body a conflict
    assert accept(inbox) is InboxOutcome.DUPLICATE
    assert accept(inbox, fingerprint="0" * 64) is InboxOutcome.CONFLICT
    assert redis_client.exists(keys.event(EVENT_ID)) == 0  # nothing was stored again


def test_a_waiting_dead_letter_keeps_its_event_until_discarded(redis_client, keys, stores):
    # given a one-unit event whose unit was dead-lettered
    inbox, ledger, letters = stores
    accept(inbox, units=1)
    letter = {"id": f"{EVENT_ID}:0:0", "event_id": EVENT_ID, "status": "waiting"}
    finish(ledger, f"{EVENT_ID}:0:0", UnitState.DEAD_LETTERED, dead_letter=letter)
    keeper = retention(redis_client, keys)
    # when retention runs (the event was queued by hand: a dead letter does not queue it)
    redis_client.sadd(keys.closing, EVENT_ID)
    # then the waiting letter keeps everything
    assert keeper.close_waiting(now=time.time()) == {"open": 1}
    assert redis_client.ttl(keys.dead_letter(f"{EVENT_ID}:0:0")) == -1
    # when an operator discards the letter
    assert letters.discard(f"{EVENT_ID}:0:0", now=time.time(), reason="customer left")
    # then the discard queued the event and retention closes it as discarded
    assert keeper.close_waiting(now=time.time()) == {"discarded": 1}
    marker = keeper.marker(EVENT_ID)
    assert marker is not None and marker.outcome is CloseResult.DISCARDED
    assert redis_client.ttl(keys.dead_letter(f"{EVENT_ID}:0:0")) in (0, 1)


def test_an_event_with_nothing_to_fulfil_closes_at_once(redis_client, keys, stores):
    # given an event recorded without units (a type no rule acts on)
    inbox, _, _ = stores
    accept(inbox, units=0)
    # when retention runs
    result = retention(redis_client, keys).close_waiting(now=time.time())
    # then it closed, and expires
    assert result == {"closed": 1}
    assert redis_client.ttl(keys.event(EVENT_ID)) in (0, 1)


def test_closing_twice_changes_nothing(redis_client, keys, stores):
    # given a closed event
    inbox, ledger, _ = stores
    accept(inbox, units=1)
    finish(ledger, f"{EVENT_ID}:0:0", UnitState.FULFILLED)
    keeper = retention(redis_client, keys, seconds=100)
    keeper.close_waiting(now=time.time())
    redis_client.expire(keys.seen(EVENT_ID), 30)
    # when it is closed again
    result = keeper.close(EVENT_ID, now=time.time())
    # then nothing is rewritten (the marker keeps its expiry)
    assert result is CloseResult.ALREADY
    assert redis_client.ttl(keys.seen(EVENT_ID)) <= 30


def test_a_customers_index_expires_with_the_last_of_their_open_events(redis_client, keys, stores):
    # given two events of one customer (same subject digest), one still open
    inbox, ledger, _ = stores
    accept(inbox, "evt_a", units=1, subjects=["d1"])
    accept(inbox, "evt_b", units=1, subjects=["d1"])
    keeper = retention(redis_client, keys, seconds=100)
    finish(ledger, "evt_a:0:0", UnitState.FULFILLED)
    # when the first closes
    keeper.close_waiting(now=time.time())
    # then the index stays (evt_b still needs it)
    assert redis_client.ttl(keys.subject("d1")) == -1
    assert redis_client.smembers(keys.subject("d1")) == {b"evt_a", b"evt_b"}
    # when the second closes too
    finish(ledger, "evt_b:0:0", UnitState.FULFILLED)
    keeper.close_waiting(now=time.time())
    # then the index expires with the events' data
    assert 0 < redis_client.ttl(keys.subject("d1")) <= 100
    # and a new event of the customer makes it permanent again while open
    accept(inbox, "evt_c", units=1, subjects=["d1"])
    assert redis_client.ttl(keys.subject("d1")) == -1


def test_a_replayed_dead_letter_expires_once_its_unit_is_fulfilled(redis_client, keys, stores):
    # given a one-unit event whose unit was dead-lettered, then replayed by an operator
    inbox, ledger, letters = stores
    accept(inbox, units=1)
    unit_id = f"{EVENT_ID}:0:0"
    letter = {"id": unit_id, "event_id": EVENT_ID, "status": "waiting"}
    finish(ledger, unit_id, UnitState.DEAD_LETTERED, dead_letter=letter)
    assert letters.replay(unit_id, now=time.time()).value == "replayed"
    keeper = retention(redis_client, keys)
    assert keeper.close_waiting(now=time.time()) == {}  # nothing queued it yet
    # when the replayed unit is fulfilled
    finish(ledger, unit_id, UnitState.FULFILLED)
    # then the event closes, the handled letter expiring with it
    assert keeper.close_waiting(now=time.time()) == {"fulfilled": 1}
    assert redis_client.ttl(keys.dead_letter(unit_id)) in (0, 1)
