"""Provider lanes in Redis: breaker, probe lease, waiting set, limits, pause and resume."""

from __future__ import annotations

import pytest

from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.lanes import BreakerPolicy, LaneLimits, LaneStore
from worker.stores.ledger import Ledger
from worker.stores.models import UnitSpec, UnitState

NOW = 1_800_000_000.0
LANE = "ifeelgoods"
OPEN = LaneLimits(max_in_flight=0, rate_per_second=0)
POLICY = BreakerPolicy(consecutive_failures=3, probe_seconds=5, funds_probe_seconds=60)


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def lanes(redis_client, keys) -> LaneStore:
    return LaneStore(redis_client, keys)


@pytest.fixture
def ledger(redis_client, keys) -> Ledger:
    return Ledger(redis_client, keys)


def _units(redis_client, keys, count: int) -> list[str]:
    Inbox(redis_client, keys).accept(
        event_id="evt_lane",
        source="coniq",
        event_type="reward.issued",
        fingerprint="fp",
        body="{}",
        units=[UnitSpec(line=0, index=i, match={}) for i in range(count)],
        now=NOW,
        stale_after=45,
    )
    return [f"evt_lane:0:{i}" for i in range(count)]


def _admit(lanes: LaneStore, uid: str, now: float, limits: LaneLimits = OPEN, **kw):
    return lanes.admit(
        LANE,
        uid,
        now=now,
        limits=limits,
        slot_ttl=kw.get("slot_ttl", 30),
        max_wait=kw.get("max_wait", 0.0),
        slot=kw.get("slot", f"{uid}#1"),
    )


def test_breaker_trips_after_consecutive_failures_and_a_probe_closes_it(lanes) -> None:
    for n in range(2):
        verdict = lanes.done(LANE, f"u{n}", f"s{n}", "failure", now=NOW, breaker=POLICY)
        assert verdict.open and verdict.transition == ""
    verdict = lanes.done(LANE, "u2", "s2", "failure", now=NOW, breaker=POLICY, reason="http_503")
    assert (verdict.transition, verdict.state, verdict.reason) == ("broken", "broken", "http_503")
    # Broken: nobody goes until the probe is due; then exactly one unit probes.
    assert _admit(lanes, "a", NOW + 1).decision == "wait"
    assert _admit(lanes, "a", NOW + 5).decision == "probe"
    assert _admit(lanes, "b", NOW + 5).decision == "wait"
    # A failed probe keeps the lane broken and schedules the next probe.
    again = lanes.done(LANE, "a", "a#1", "failure", now=NOW + 6, breaker=POLICY)
    assert again.state == "broken" and again.transition == ""
    assert _admit(lanes, "b", NOW + 7).decision == "wait"
    assert _admit(lanes, "b", NOW + 11).decision == "probe"
    closed = lanes.done(LANE, "b", "b#1", "success", now=NOW + 11.5, breaker=POLICY)
    assert (closed.transition, closed.state) == ("opened", "open")
    assert _admit(lanes, "c", NOW + 12).decision == "unit"


def test_a_success_resets_the_consecutive_count(lanes) -> None:
    for n in range(2):
        lanes.done(LANE, "u", "s", "failure", now=NOW + n, breaker=POLICY)
    lanes.done(LANE, "u", "s", "success", now=NOW + 2, breaker=POLICY)
    for n in range(2):
        assert lanes.done(LANE, "u", "s", "failure", now=NOW + 3 + n, breaker=POLICY).open


def test_breaker_trips_on_the_error_rate_over_the_window(lanes) -> None:
    policy = BreakerPolicy(consecutive_failures=100, error_rate=0.5, min_calls=10)
    verdict = None
    for n in range(10):  # alternate: never two failures in a row, half of them failures
        outcome = "failure" if n % 2 else "success"
        verdict = lanes.done(LANE, "u", "s", outcome, now=NOW + n, breaker=policy)
    assert verdict is not None and verdict.transition == "broken"


def test_probe_lease_expires_when_its_holder_dies(lanes) -> None:
    lanes.done(LANE, "u", "s", "failure", now=NOW, breaker=BreakerPolicy(consecutive_failures=1))
    first = lanes.admit(LANE, "a", now=NOW + 20, limits=OPEN, slot_ttl=0.2, max_wait=0, slot="a#1")
    assert first.decision == "probe"
    assert _admit(lanes, "b", NOW + 20).decision == "wait"
    # The holder never reports (killed); the lease has a real TTL in Redis.
    import time

    time.sleep(0.35)
    assert _admit(lanes, "b", NOW + 21).decision == "probe"


def test_funds_pause_probes_on_its_own_clock_and_reopens_only_on_success(lanes) -> None:
    verdict = lanes.done(LANE, "u", "s", "funds", now=NOW, breaker=POLICY, reason="no_allocation")
    assert (verdict.transition, verdict.state, verdict.reason) == ("paused", "paused", "funds")
    assert _admit(lanes, "a", NOW + 30).decision == "wait"
    assert _admit(lanes, "a", NOW + 60).decision == "probe"
    # A definite answer that is not a success does not reopen a funds pause.
    assert lanes.done(LANE, "a", "a#1", "answered", now=NOW + 61, breaker=POLICY).state == "paused"
    assert _admit(lanes, "b", NOW + 61).decision == "wait"
    assert _admit(lanes, "b", NOW + 200).decision == "probe"
    assert lanes.done(LANE, "b", "b#1", "success", now=NOW + 201, breaker=POLICY).open


def test_operator_pause_is_not_probed_and_resume_opens(lanes) -> None:
    lanes.set_state(LANE, "paused", reason="maintenance", by="ops@example", action="pause")
    assert _admit(lanes, "a", NOW + 10_000).decision == "wait"
    # A funds answer from a call in flight does not replace the operator's pause.
    verdict = lanes.done(LANE, "x", "x#1", "funds", now=NOW, breaker=POLICY)
    assert (verdict.state, verdict.reason) == ("paused", "maintenance")
    before = lanes.set_state(LANE, "open", reason="done", by="ops@example", action="resume")
    assert before == ("paused", "maintenance")
    assert _admit(lanes, "a", NOW).decision == "unit"
    log = lanes.audit_log()
    assert [e["action"] for e in log] == ["resume", "pause"]
    assert log[1]["by"] == "ops@example" and log[1]["reason"] == "maintenance"


def test_in_flight_cap_counts_slots_and_expired_slots_free_themselves(lanes) -> None:
    limits = LaneLimits(max_in_flight=2, rate_per_second=0)
    assert _admit(lanes, "a", NOW, limits, slot="a", slot_ttl=10).goes
    assert _admit(lanes, "b", NOW, limits, slot="b", slot_ttl=10).goes
    full = _admit(lanes, "c", NOW, limits, slot="c")
    assert (full.decision, full.detail) == ("defer", "in_flight")
    lanes.done(LANE, "a", "a", "success", now=NOW, breaker=POLICY)
    assert _admit(lanes, "c", NOW, limits, slot="c").goes
    # b's worker died: its slot lease runs out and frees the place.
    assert _admit(lanes, "d", NOW + 11, limits, slot="d").goes


def test_token_bucket_spaces_calls_at_the_rate(lanes) -> None:
    limits = LaneLimits(max_in_flight=0, rate_per_second=10)  # burst of 1
    assert _admit(lanes, "a", NOW, limits).seconds == 0
    second = _admit(lanes, "b", NOW, limits, max_wait=1.0)
    assert second.goes and second.seconds == pytest.approx(0.1)
    third = _admit(lanes, "c", NOW, limits, max_wait=1.0)
    assert third.seconds == pytest.approx(0.2)
    refused = _admit(lanes, "d", NOW, limits, max_wait=0.05)
    assert refused.decision == "defer" and refused.seconds == pytest.approx(0.3)
    # A refused reservation gave its token back: e goes after c, not after d.
    assert _admit(lanes, "e", NOW, limits, max_wait=1.0).seconds == pytest.approx(0.3)


def test_a_429_slows_the_whole_lane_then_it_recovers(lanes) -> None:
    limits = LaneLimits(max_in_flight=0, rate_per_second=10)
    lanes.done(LANE, "u", "s", "rate_limited", now=NOW, breaker=POLICY, retry_after=2.0)
    held = _admit(lanes, "a", NOW + 1, limits)
    assert (held.decision, held.detail) == ("defer", "rate_limited")
    assert held.seconds == pytest.approx(1.0)
    # After Retry-After the rate is halved: 5/s, tokens refill at half speed.
    assert _admit(lanes, "a", NOW + 2, limits).goes
    slower = _admit(lanes, "b", NOW + 2, limits, max_wait=1.0)
    assert slower.seconds == pytest.approx(0.2)
    # Four seconds later it is back at full rate.
    assert _admit(lanes, "c", NOW + 20, limits).goes
    assert _admit(lanes, "d", NOW + 20, limits, max_wait=1.0).seconds == pytest.approx(0.1)


def test_answers_of_one_429_episode_halve_the_rate_once(lanes) -> None:
    limits = LaneLimits(max_in_flight=0, rate_per_second=10)
    first = lanes.done(LANE, "u", "s", "rate_limited", now=NOW, breaker=POLICY, retry_after=1.0)
    # Calls that were in flight get their 429s too: the same episode, a longer wait.
    again = lanes.done(
        LANE, "v", "t", "rate_limited", now=NOW + 0.5, breaker=POLICY, retry_after=1.0
    )
    assert (first.transition, again.transition) == ("slowed", "")
    held = _admit(lanes, "a", NOW + 1.2, limits)
    assert held.decision == "defer" and held.seconds == pytest.approx(0.3)
    assert _admit(lanes, "a", NOW + 1.5, limits).goes
    # Halved once (5/s), not twice (2.5/s).
    assert _admit(lanes, "b", NOW + 1.5, limits, max_wait=1.0).seconds == pytest.approx(0.2)


def test_set_aside_hands_the_attempt_back_and_release_is_oldest_first(
    lanes, ledger, redis_client, keys
) -> None:
    uids = _units(redis_client, keys, 3)
    for n, uid in enumerate(reversed(uids)):  # the last unit waits first
        begin = ledger.begin(uid, now=NOW + n, lease_seconds=30)
        assert begin.attempt == 1
        assert lanes.set_aside(
            LANE,
            uid,
            begin.attempt,
            restore=UnitState.PENDING.value,
            now=NOW + n,
            come_back_at=NOW + 60,
            park=True,
            clear_first_attempt=True,
        )
        unit = ledger.get(uid)
        assert unit is not None and unit.state is UnitState.PENDING
        assert ledger.round_attempts(uid) == 0 and unit.first_attempt_at == 0
    assert lanes.view(LANE).waiting == 3
    assert lanes.release(LANE, 2, now=NOW + 100) == 2
    live = {k.decode(): v for k, v in redis_client.zrange(keys.live, 0, -1, withscores=True)}
    assert live[uids[2]] == NOW + 100 and live[uids[1]] == NOW + 100
    assert live[uids[0]] == NOW + 60
    # A stale holder (attempt number taken over) cannot set the unit aside.
    assert not lanes.set_aside(
        LANE,
        uids[0],
        7,
        restore="pending",
        now=NOW,
        come_back_at=NOW,
        park=True,
        clear_first_attempt=True,
    )


def test_waiting_time_does_not_count_against_the_horizon(lanes, ledger, redis_client, keys) -> None:
    (uid,) = _units(redis_client, keys, 1)
    begin = ledger.begin(uid, now=NOW, lease_seconds=30)
    # First attempt failed while the lane broke: it keeps its first_attempt_at.
    assert lanes.set_aside(
        LANE,
        uid,
        begin.attempt,
        restore=UnitState.UNKNOWN.value,
        now=NOW + 1,
        come_back_at=NOW + 60,
        park=True,
        clear_first_attempt=False,
    )
    assert ledger.get(uid).state is UnitState.UNKNOWN  # its look-up rule is kept
    gate = _admit(lanes, uid, NOW + 501)
    assert gate.goes and gate.waited == pytest.approx(500)
    unit = ledger.get(uid)
    assert unit.first_attempt_at == pytest.approx(NOW + 500)
    assert lanes.view(LANE).waiting == 0


def test_the_error_rate_window_forgets_old_calls(lanes) -> None:
    policy = BreakerPolicy(consecutive_failures=100, error_rate=0.5, min_calls=6, window_seconds=10)
    for n in range(4):  # a bad patch long ago
        lanes.done(LANE, "u", "s", "failure", now=NOW + n, breaker=policy)
    lanes.done(LANE, "u", "s", "success", now=NOW + 8, breaker=policy)
    # The window moved on: those failures no longer count, though successes kept coming.
    lanes.done(LANE, "u", "s", "success", now=NOW + 14, breaker=policy)
    verdict = lanes.done(LANE, "u", "s", "failure", now=NOW + 15, breaker=policy)
    assert verdict.open
