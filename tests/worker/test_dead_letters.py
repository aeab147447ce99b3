"""Dead letters: replay under the same key, dry runs, discards, the audit log, filters."""

from __future__ import annotations

import pytest

from worker.stores.dead_letters import DeadLetters, LetterStatus, ReplayResult
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, BeginDecision, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState

NOW = 1_800_000_000.0
LEASE = 60.0


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def ledger(redis_client, keys) -> Ledger:
    return Ledger(redis_client, keys)


@pytest.fixture
def letters(redis_client, keys) -> DeadLetters:
    return DeadLetters(redis_client, keys)


@pytest.fixture
def inbox(redis_client, keys) -> Inbox:
    return Inbox(redis_client, keys)


def dead_letter(
    inbox: Inbox,
    ledger: Ledger,
    event_id: str,
    *,
    source: str = "coniq",
    provider: str = "ifeelgoods",
    reason: str = "permanent",
    at: float = NOW,
    state: UnitState = UnitState.DEAD_LETTERED,
) -> str:
    """Accept a one-unit event and take its unit through one attempt into ``state``."""
    inbox.accept(
        event_id=event_id,
        source=source,
        event_type="reward.issued",
        fingerprint=f"fp-{event_id}",
        body="{}",
        units=[UnitSpec(line=0, index=0, match={"offer_id": "1001"})],
        now=at - 10,
        stale_after=45.0,
    )
    unit_id = f"{event_id}:0:0"
    fail(ledger, unit_id, source=source, provider=provider, reason=reason, at=at, state=state)
    return unit_id


def fail(
    ledger: Ledger,
    unit_id: str,
    *,
    source: str = "coniq",
    provider: str = "ifeelgoods",
    reason: str = "permanent",
    at: float = NOW,
    state: UnitState = UnitState.DEAD_LETTERED,
) -> None:
    begun = ledger.begin(unit_id, now=at - 1, lease_seconds=LEASE)
    assert begun.decision.proceeds
    done = ledger.finish(
        unit_id,
        begun.attempt,
        state,
        AttemptRecord(
            attempt=begun.attempt,
            at=at - 1,
            mode=begun.decision,
            outcome=AttemptOutcome.UNROUTABLE
            if state is UnitState.UNROUTABLE
            else AttemptOutcome.DEAD_LETTER,
        ),
        now=at,
        next_check_at=None,
        fields={"provider": provider, "dead_letter_id": unit_id},
        dead_letter={
            "id": unit_id,
            "event_id": unit_id.split(":")[0],
            "source": source,
            "provider": provider,
            "product": "1/SKU" if provider else "",
            "reason": reason,
            "error_type": "PermanentProviderError",
            "status_code": 422,
            "detail": reason,
            "attempts": begun.attempt,
            "created_at": at,
            "status": "waiting",
        },
    )
    assert done


def snapshot(redis_client, keys, unit_id):
    return (
        redis_client.hgetall(keys.unit(unit_id)),
        redis_client.hgetall(keys.dead_letter(unit_id)),
        redis_client.zrange(keys.dead_letters, 0, -1, withscores=True),
        redis_client.zrange(keys.live, 0, -1, withscores=True),
        redis_client.lrange(keys.dead_letter_log, 0, -1),
    )


def test_replay_returns_unit_to_unknown_and_schedules_it(
    inbox, ledger, letters, redis_client, keys
):
    # given a dead-lettered unit that reached the provider once
    unit_id = dead_letter(inbox, ledger, "evt_r")
    # when it is replayed to be due a little later
    result = letters.replay(unit_id, now=NOW + 100, actor="ops", at=NOW + 105)
    # then the unit is back on the schedule, to look its key up before any resubmit
    assert result is ReplayResult.REPLAYED
    unit = ledger.get(unit_id)
    assert unit.state is UnitState.UNKNOWN
    assert (unit.next_attempt_at, unit.first_attempt_at) == (0.0, 0.0)
    assert ledger.round_attempts(unit_id) == 0
    assert unit.attempts == 1  # the history is kept
    assert redis_client.zscore(keys.live, unit_id) == NOW + 105
    # and the letter is no longer waiting
    letter = letters.get(unit_id)
    assert letter.status is LetterStatus.REPLAYED
    assert redis_client.zscore(keys.dead_letters, unit_id) is None
    assert letters.waiting_count() == 0
    # and the replay is in the audit log
    assert letters.audit_log() == [
        {"action": "replay", "id": unit_id, "at": NOW + 100, "actor": "ops"}
    ]
    # and the next delivery takes it with a lookup
    begun = ledger.begin(unit_id, now=NOW + 105, lease_seconds=LEASE)
    assert begun.decision is BeginDecision.LOOKUP


def test_replay_of_unroutable_unit_returns_it_to_pending(inbox, ledger, letters):
    # given a unit no rule could route
    unit_id = dead_letter(
        inbox, ledger, "evt_u", provider="", reason="unroutable", state=UnitState.UNROUTABLE
    )
    # when it is replayed (say, after the rules were fixed)
    result = letters.replay(unit_id, now=NOW + 100)
    # then it is routed afresh
    assert result is ReplayResult.REPLAYED
    assert ledger.get(unit_id).state is UnitState.PENDING
    assert ledger.begin(unit_id, now=NOW + 101, lease_seconds=LEASE).decision is (
        BeginDecision.SUBMIT
    )


def test_replay_without_at_is_due_now(inbox, ledger, letters, redis_client, keys):
    # given a dead-lettered unit
    unit_id = dead_letter(inbox, ledger, "evt_now")
    # when
    letters.replay(unit_id, now=NOW + 7)
    # then
    assert redis_client.zscore(keys.live, unit_id) == NOW + 7
    assert ledger.due(now=NOW + 7) == [unit_id]


def test_second_replay_is_not_waiting_and_changes_nothing(
    inbox, ledger, letters, redis_client, keys
):
    # given a replayed letter
    unit_id = dead_letter(inbox, ledger, "evt_twice")
    letters.replay(unit_id, now=NOW + 100, at=NOW + 100)
    before = snapshot(redis_client, keys, unit_id)
    # when it is replayed again
    result = letters.replay(unit_id, now=NOW + 200, at=NOW + 200)
    # then
    assert result is ReplayResult.NOT_WAITING
    assert snapshot(redis_client, keys, unit_id) == before


def test_replay_of_unknown_letter_is_not_found(letters):
    # given nothing
    # when / then
    assert letters.replay("evt_none:0:0", now=NOW) is ReplayResult.NOT_FOUND


def test_dry_run_replay_reports_and_changes_nothing(inbox, ledger, letters, redis_client, keys):
    # given a waiting letter
    unit_id = dead_letter(inbox, ledger, "evt_dry")
    before = snapshot(redis_client, keys, unit_id)
    # when
    result = letters.replay(unit_id, now=NOW + 100, dry_run=True)
    # then
    assert result is ReplayResult.WOULD_REPLAY
    assert snapshot(redis_client, keys, unit_id) == before
    assert letters.get(unit_id).status is LetterStatus.WAITING


def test_discard_is_recorded_and_final(inbox, ledger, letters, redis_client, keys):
    # given a waiting letter
    unit_id = dead_letter(inbox, ledger, "evt_d")
    # when it is discarded
    done = letters.discard(unit_id, now=NOW + 50, actor="ops", reason="customer refunded")
    # then it leaves the waiting index, with the reason in the audit log
    assert done is True
    assert letters.get(unit_id).status is LetterStatus.DISCARDED
    assert redis_client.hget(keys.dead_letter(unit_id), "discard_reason") == b"customer refunded"
    assert redis_client.zscore(keys.dead_letters, unit_id) is None
    assert letters.audit_log() == [
        {
            "action": "discard",
            "id": unit_id,
            "at": NOW + 50,
            "actor": "ops",
            "reason": "customer refunded",
        }
    ]
    # and it cannot be discarded again or replayed
    assert letters.discard(unit_id, now=NOW + 60) is False
    assert letters.replay(unit_id, now=NOW + 60) is ReplayResult.NOT_WAITING
    assert ledger.get(unit_id).state is UnitState.DEAD_LETTERED
    assert len(letters.audit_log()) == 1


def test_discard_reason_is_truncated(inbox, ledger, letters, redis_client, keys):
    # given a waiting letter
    unit_id = dead_letter(inbox, ledger, "evt_long")
    # when discarded with a very long reason
    letters.discard(unit_id, now=NOW, reason="x" * 1000)
    # then only a bounded reason is stored
    assert len(redis_client.hget(keys.dead_letter(unit_id), "discard_reason")) == 200


def test_discard_of_unknown_letter_is_false_and_writes_nothing(letters, redis_client, keys):
    # given nothing
    # when
    done = letters.discard("evt_none:0:0", now=NOW)
    # then
    assert done is False
    assert redis_client.exists(keys.dead_letter("evt_none:0:0"), keys.dead_letter_log) == 0


def test_unit_dead_lettered_again_after_replay_is_waiting_again(
    inbox, ledger, letters, redis_client, keys
):
    # given a replayed unit
    unit_id = dead_letter(inbox, ledger, "evt_again")
    letters.replay(unit_id, now=NOW + 10)
    # when its lookup attempt fails for good again
    fail(ledger, unit_id, reason="retries-exhausted", at=NOW + 20)
    # then the same letter is waiting again, counted twice
    letter = letters.get(unit_id)
    assert (letter.status, letter.times, letter.reason, letter.attempts) == (
        LetterStatus.WAITING,
        2,
        "retries-exhausted",
        2,
    )
    assert [w.id for w in letters.iter_waiting()] == [unit_id]


@pytest.fixture
def four_letters(inbox, ledger, letters) -> list[str]:
    """Four waiting letters, oldest first, plus one already replayed."""
    ids = [
        dead_letter(inbox, ledger, "evt_a", source="coniq", provider="ifeelgoods", at=NOW),
        dead_letter(
            inbox,
            ledger,
            "evt_b",
            source="coniq",
            provider="rewardops",
            reason="retries-exhausted",
            at=NOW + 10,
        ),
        dead_letter(
            inbox,
            ledger,
            "evt_c",
            source="internal",
            provider="ifeelgoods",
            reason="retries-exhausted",
            at=NOW + 20,
        ),
        dead_letter(
            inbox,
            ledger,
            "evt_d",
            source="internal",
            provider="",
            reason="unroutable",
            at=NOW + 30,
            state=UnitState.UNROUTABLE,
        ),
    ]
    replayed = dead_letter(inbox, ledger, "evt_e", at=NOW + 5)
    letters.replay(replayed, now=NOW + 40)
    return ids


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["evt_a", "evt_b", "evt_c", "evt_d"]),
        ({"source": "coniq"}, ["evt_a", "evt_b"]),
        ({"provider": "ifeelgoods"}, ["evt_a", "evt_c"]),
        ({"reason": "retries-exhausted"}, ["evt_b", "evt_c"]),
        ({"reason": "unroutable"}, ["evt_d"]),
        ({"since": NOW + 10}, ["evt_b", "evt_c", "evt_d"]),
        ({"source": "internal", "provider": "ifeelgoods"}, ["evt_c"]),
        ({"limit": 2}, ["evt_a", "evt_b"]),
        ({"source": "coniq", "limit": 1, "since": NOW + 1}, ["evt_b"]),
        ({"source": "email"}, []),
    ],
)
def test_iter_waiting_filters_oldest_first(letters, four_letters, filters, expected):
    # given four waiting letters and one replayed one
    # when
    found = [letter.id for letter in letters.iter_waiting(**filters)]
    # then only waiting letters that match every filter are listed, oldest first
    assert found == [f"{event_id}:0:0" for event_id in expected]


def test_letter_view_holds_only_redacted_facts(inbox, ledger, letters):
    # given a dead-lettered unit
    unit_id = dead_letter(inbox, ledger, "evt_view", source="internal", provider="rewardops")
    # when
    view = letters.get(unit_id).to_dict()
    # then
    assert view == {
        "id": unit_id,
        "event_id": "evt_view",
        "source": "internal",
        "provider": "rewardops",
        "product": "1/SKU",
        "reason": "permanent",
        "error_type": "PermanentProviderError",
        "status_code": 422,
        "detail": "permanent",
        "attempts": 1,
        "created_at": NOW,
        "status": "waiting",
        "times": 1,
        "provider_message": "",
        "unrouted_field": "",
        "unrouted_value": "",
        "rules_file": "",
        "rules_fingerprint": "",
    }
