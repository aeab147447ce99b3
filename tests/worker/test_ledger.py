"""Ledger: fenced begin/finish transitions, the live set, attempt history, dead letters."""

from __future__ import annotations

import json
import threading

import pytest

from tests.conftest import TEST_CODE_KEY
from worker.stores.crypto import CodeVault
from worker.stores.dead_letters import DeadLetters, LetterStatus
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, BeginDecision, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState

NOW = 1_800_000_000.0
LEASE = 60.0
UNIT = "evt_l:0:0"


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def ledger(redis_client, keys) -> Ledger:
    return Ledger(redis_client, keys, CodeVault((TEST_CODE_KEY,)))


@pytest.fixture
def unit_id(redis_client, keys) -> str:
    """One pending unit, accepted at the edge at NOW."""
    Inbox(redis_client, keys).accept(
        event_id="evt_l",
        source="coniq",
        event_type="reward.issued",
        fingerprint="fp",
        body="{}",
        units=[UnitSpec(line=0, index=0, match={"offer_id": "1001"})],
        now=NOW,
        stale_after=45.0,
    )
    return UNIT


def record(attempt: int, outcome: str = AttemptOutcome.RETRY, **extra) -> AttemptRecord:
    return AttemptRecord(
        attempt=attempt, at=NOW, mode=BeginDecision.SUBMIT, outcome=AttemptOutcome(outcome), **extra
    )


def move_to(ledger: Ledger, unit_id: str, state: UnitState, *, next_at: float = 0.0) -> int:
    """Take the unit through one attempt that ends in ``state``; returns the attempt number."""
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    assert begun.decision.proceeds
    fields = {"next_attempt_at": next_at} if next_at else {}
    done = ledger.finish(
        unit_id,
        begun.attempt,
        state,
        record(begun.attempt),
        now=NOW + 1,
        next_check_at=next_at or None,
        fields=fields,
    )
    assert done
    return begun.attempt


def test_begin_hands_back_the_unit_and_its_event_body_in_the_same_answer(
    ledger, unit_id, redis_client, keys
):
    # given a pending unit of an event with a body
    redis_client.hset(keys.event("evt_l"), "body", '{"data": {"customer": {"email": "a@b.c"}}}')
    # when
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # then the unit is as begin left it, and the body is the event's
    assert begun.unit is not None
    assert begun.unit.state is UnitState.SUBMITTING and begun.unit.attempts == 1
    assert begun.unit.match == {"offer_id": "1001"} and begun.unit.event_id == "evt_l"
    assert json.loads(begun.event_body)["data"]["customer"]["email"] == "a@b.c"


def test_begin_without_the_event_gives_an_empty_body(ledger, unit_id, redis_client, keys):
    # given the event hash is gone (deleted by hand), the unit still pending
    redis_client.delete(keys.event("evt_l"))
    # when
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # then the attempt proceeds, with nothing to read a recipient from
    assert begun.decision is BeginDecision.SUBMIT and begun.unit is not None
    assert begun.event_body == ""


def test_begin_on_pending_unit_submits_attempt_one(ledger, unit_id, redis_client, keys):
    # given a pending unit
    # when
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # then the worker may submit, holding attempt 1 under a lease
    assert (begun.decision, begun.attempt, begun.previous_state) == (
        BeginDecision.SUBMIT,
        1,
        "pending",
    )
    unit = ledger.get(unit_id)
    assert unit.state is UnitState.SUBMITTING
    assert unit.attempts == 1
    assert unit.first_attempt_at == NOW
    assert ledger.round_attempts(unit_id) == 1
    assert float(ledger.field(unit_id, "lease_until")) == NOW + LEASE
    # and the scheduler looks again when the lease runs out
    assert redis_client.zscore(keys.live, unit_id) == NOW + LEASE


def test_second_begin_under_unexpired_lease_is_busy(ledger, unit_id):
    # given a unit one worker is submitting
    ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # when a redelivery tries before the lease runs out
    begun = ledger.begin(unit_id, now=NOW + LEASE - 1, lease_seconds=LEASE)
    # then it must not touch the unit
    assert (begun.decision, begun.attempt) == (BeginDecision.BUSY, 0)
    assert begun.decision.proceeds is False
    assert ledger.get(unit_id).attempts == 1


def test_begin_after_lease_expiry_looks_up_before_resubmitting(ledger, unit_id):
    # given a unit whose worker died mid-submit
    ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # when another delivery arrives after the lease ran out
    begun = ledger.begin(unit_id, now=NOW + LEASE + 1, lease_seconds=LEASE)
    # then it takes over with a new attempt number and must look the key up first
    assert (begun.decision, begun.attempt, begun.previous_state) == (
        BeginDecision.LOOKUP,
        2,
        "submitting",
    )
    # and the first attempt time is kept for the horizon
    assert ledger.get(unit_id).first_attempt_at == NOW


@pytest.mark.parametrize(
    "state",
    [UnitState.FULFILLED, UnitState.DEAD_LETTERED, UnitState.UNROUTABLE, UnitState.IGNORED],
)
def test_begin_on_terminal_unit_is_terminal(ledger, unit_id, state):
    # given a unit that reached a terminal state
    move_to(ledger, unit_id, state)
    # when it is delivered again
    begun = ledger.begin(unit_id, now=NOW + 1000, lease_seconds=LEASE)
    # then nothing happens
    assert (begun.decision, begun.attempt, begun.previous_state) == (
        BeginDecision.TERMINAL,
        0,
        state.value,
    )
    assert ledger.get(unit_id).attempts == 1
    assert ledger.get(unit_id).state is state


@pytest.mark.parametrize(
    ("state", "decision"),
    [
        (UnitState.RETRYING, BeginDecision.SUBMIT),
        (UnitState.UNKNOWN, BeginDecision.LOOKUP),
        (UnitState.AWAITING_DELIVERY, BeginDecision.FOLLOW),
    ],
)
def test_scheduled_unit_is_early_before_its_time_and_proceeds_when_due(
    ledger, unit_id, state, decision
):
    # given a unit whose next attempt is scheduled 30 s after NOW
    move_to(ledger, unit_id, state, next_at=NOW + 30)
    # when a delivery arrives early
    early = ledger.begin(unit_id, now=NOW + 10, lease_seconds=LEASE)
    # then it is refused without consuming an attempt
    assert (early.decision, early.attempt) == (BeginDecision.EARLY, 0)
    assert ledger.get(unit_id).attempts == 1
    # when a delivery arrives when due
    due = ledger.begin(unit_id, now=NOW + 30, lease_seconds=LEASE)
    # then it proceeds in the mode the state calls for
    assert (due.decision, due.attempt, due.previous_state) == (decision, 2, state.value)


def test_unknown_without_schedule_looks_up_at_once(ledger, unit_id):
    # given a unit whose outcome is unknown and no retry time
    move_to(ledger, unit_id, UnitState.UNKNOWN)
    # when
    begun = ledger.begin(unit_id, now=NOW + 2, lease_seconds=LEASE)
    # then
    assert begun.decision is BeginDecision.LOOKUP


def test_begin_on_missing_unit_is_missing(ledger, key_prefix):
    # given no unit
    # when
    begun = ledger.begin("evt_none:0:0", now=NOW, lease_seconds=LEASE)
    # then
    assert begun.decision is BeginDecision.MISSING


def test_stale_attempt_cannot_finish_over_a_newer_one(ledger, unit_id, redis_client, keys):
    # given attempt 1 whose lease ran out and attempt 2 that took over
    ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    ledger.begin(unit_id, now=NOW + LEASE + 1, lease_seconds=LEASE)
    # when the late attempt 1 tries to record a result, with a dead letter
    done = ledger.finish(
        unit_id,
        1,
        UnitState.DEAD_LETTERED,
        record(1, "dead_letter"),
        now=NOW + LEASE + 2,
        next_check_at=None,
        fields={"provider": "ifeelgoods"},
        dead_letter={"id": unit_id, "reason": "late", "status": "waiting"},
    )
    # then it is fenced out and changed nothing
    assert done is False
    unit = ledger.get(unit_id)
    assert (unit.state, unit.attempts, unit.provider) == (UnitState.SUBMITTING, 2, "")
    assert ledger.attempts(unit_id) == []
    assert redis_client.zscore(keys.live, unit_id) == NOW + 2 * LEASE + 1
    assert redis_client.exists(keys.dead_letter(unit_id)) == 0
    assert redis_client.zcard(keys.dead_letters) == 0
    # and the current attempt still can finish
    assert ledger.finish(
        unit_id, 2, UnitState.FULFILLED, record(2), now=NOW + 70, next_check_at=None
    )


def test_attempt_cannot_finish_twice(ledger, unit_id):
    # given a finished attempt
    attempt = move_to(ledger, unit_id, UnitState.RETRYING, next_at=NOW + 5)
    # when it tries to finish again
    again = ledger.finish(
        unit_id, attempt, UnitState.FULFILLED, record(attempt), now=NOW + 2, next_check_at=None
    )
    # then the second result is refused
    assert again is False
    assert ledger.get(unit_id).state is UnitState.RETRYING
    assert len(ledger.attempts(unit_id)) == 1


def test_finish_schedules_next_check_or_leaves_live_set(ledger, unit_id, redis_client, keys):
    # given a unit in its first attempt
    first = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # when it finishes with a retry time
    ledger.finish(
        unit_id,
        first.attempt,
        UnitState.RETRYING,
        record(1),
        now=NOW + 1,
        next_check_at=NOW + 9,
        fields={"next_attempt_at": NOW + 9},
    )
    # then it is live, due at that time
    assert redis_client.zscore(keys.live, unit_id) == NOW + 9
    assert ledger.due(now=NOW + 8) == []
    assert ledger.due(now=NOW + 9) == [unit_id]
    # when its next attempt finishes terminally (no next check)
    second = ledger.begin(unit_id, now=NOW + 9, lease_seconds=LEASE)
    ledger.finish(
        unit_id, second.attempt, UnitState.FULFILLED, record(2), now=NOW + 10, next_check_at=None
    )
    # then it has left the live set
    assert redis_client.zscore(keys.live, unit_id) is None
    assert redis_client.zcard(keys.live) == 0
    assert ledger.field(unit_id, "lease_until") is None


def test_finish_appends_attempt_history_in_order(ledger, unit_id):
    # given three attempts: retry, unknown, fulfilled
    outcomes = [
        (UnitState.RETRYING, "retry", 503),
        (UnitState.UNKNOWN, "unknown", None),
        (UnitState.FULFILLED, "fulfilled", None),
    ]
    for step, (state, outcome, status) in enumerate(outcomes):
        now = NOW + 100 * step
        begun = ledger.begin(unit_id, now=now, lease_seconds=LEASE)
        # when each finishes
        ledger.finish(
            unit_id,
            begun.attempt,
            state,
            record(begun.attempt, outcome, status_code=status, reason="x"),
            now=now + 1,
            next_check_at=None if state is UnitState.FULFILLED else now + 50,
        )
    # then the history holds one record per attempt, oldest first
    history = ledger.attempts(unit_id)
    assert [(h["attempt"], h["outcome"], h["status_code"]) for h in history] == [
        (1, "retry", 503),
        (2, "unknown", None),
        (3, "fulfilled", None),
    ]


def test_finish_writes_fields_and_codes(ledger, unit_id):
    # given a unit in its first attempt
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # when it is fulfilled with a provider reference and codes
    ledger.finish(
        unit_id,
        begun.attempt,
        UnitState.FULFILLED,
        record(1, "fulfilled"),
        now=NOW + 1,
        next_check_at=None,
        fields={
            "provider": "ifeelgoods",
            "provider_ref": "ord-123",
            **ledger.sealed_fields(["ABCD-1234-SECRET"], []),
        },
    )
    # then
    unit = ledger.get(unit_id)
    assert (unit.state, unit.provider, unit.provider_ref) == (
        UnitState.FULFILLED,
        "ifeelgoods",
        "ord-123",
    )
    assert unit.has_codes is True
    assert unit.terminal is True
    assert unit.updated_at == NOW + 1
    assert ledger.codes(unit_id) == ["****CRET"]  # what any view shows
    assert "ABCD-1234-SECRET" not in str(ledger._redis.hgetall(ledger._keys.unit(unit_id)))


def test_dead_letter_is_written_with_the_unit_state(ledger, unit_id, redis_client, keys):
    # given a unit in its first attempt
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # when it is dead-lettered
    done = ledger.finish(
        unit_id,
        begun.attempt,
        UnitState.DEAD_LETTERED,
        record(1, "dead_letter"),
        now=NOW + 5,
        next_check_at=None,
        fields={"provider": "rewardops", "dead_letter_id": unit_id},
        dead_letter={
            "id": unit_id,
            "event_id": "evt_l",
            "source": "coniq",
            "provider": "rewardops",
            "product": "12/tok",
            "reason": "permanent",
            "error_type": "PermanentProviderError",
            "status_code": 422,
            "detail": "permanent",
            "attempts": 1,
            "created_at": NOW + 5,
            "status": "waiting",
        },
    )
    # then the unit and its letter changed together
    assert done is True
    unit = ledger.get(unit_id)
    assert (unit.state, unit.dead_letter_id) == (UnitState.DEAD_LETTERED, unit_id)
    letter = DeadLetters(redis_client, keys).get(unit_id)
    assert letter is not None
    assert (letter.reason, letter.status_code, letter.status, letter.times) == (
        "permanent",
        422,
        LetterStatus.WAITING,
        1,
    )
    # and it is indexed as waiting at the time it was dead-lettered
    assert redis_client.zscore(keys.dead_letters, unit_id) == NOW + 5
    assert redis_client.zscore(keys.live, unit_id) is None


def test_finish_adds_unit_to_an_extra_index(ledger, unit_id, redis_client, keys):
    # given a unit in its first attempt
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=LEASE)
    # when no rule routes it
    ledger.finish(
        unit_id,
        begun.attempt,
        UnitState.UNROUTABLE,
        record(1, "unroutable"),
        now=NOW + 1,
        next_check_at=None,
        index=keys.unroutable,
    )
    # then operators find it in the unroutable index
    assert redis_client.zscore(keys.unroutable, unit_id) == NOW + 1


def test_get_many_skips_missing_units(ledger, unit_id):
    # given one real unit
    # when
    units = ledger.get_many([unit_id, "evt_none:0:0"])
    # then
    assert [u.id for u in units] == [unit_id]
    assert units[0].match == {"offer_id": "1001"}
    assert units[0].source == "coniq"


def test_concurrent_begins_on_one_pending_unit_let_exactly_one_proceed(
    ledger, unit_id, redis_client, keys
):
    # given 20 deliveries of the same pending unit racing
    count = 20
    barrier = threading.Barrier(count)
    results = []
    lock = threading.Lock()

    def deliver() -> None:
        own = Ledger(redis_client, keys)
        barrier.wait()
        begun = own.begin(unit_id, now=NOW, lease_seconds=LEASE)
        with lock:
            results.append(begun)

    threads = [threading.Thread(target=deliver) for _ in range(count)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # then exactly one submits, all others see the lease
    decisions = [r.decision for r in results]
    assert decisions.count(BeginDecision.SUBMIT) == 1
    assert decisions.count(BeginDecision.BUSY) == count - 1
    assert ledger.get(unit_id).attempts == 1
