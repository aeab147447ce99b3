"""Provider lanes on the fulfilment path: who may call a provider now, and what an answer
does to the provider's lane.

    begin (ledger)          the unit holds a fenced attempt
    enter(lane)             lane open and a slot and a token free → call
                            lane not open → set aside: attempt handed back, unit waits
                              in the lane (no provider call, no attempt used, horizon paused)
                            a limit (in flight, rate, 429 slow-down) → wait in the task up to
                              LANE_MAX_WAIT_SECONDS, else set aside until the limit allows
    call.run(provider call) success / definite answer → the lane hears the provider is up
                            transient or unknown outcome → counts towards the breaker; if
                              the lane is (now) not open the unit is set aside, keeping
                              its look-up-before-resubmit state (UNKNOWN)
                            funds / cap exhausted → the lane pauses (reason ``funds``)
                              and the unit waits, instead of a dead letter
                            429 → the whole lane slows down (Retry-After, then recovers)

``tick`` (beat, every LANE_TICK_SECONDS) releases waiting units of open lanes oldest first
at the lane's rate, and lets one unit probe a broken or funds-paused lane when its probe
is due. Transitions are logged with the lane and reason, counted, written to the audit log
and, for broken and funds, sent to Sentry once each.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sentry_sdk
from celery import Task, shared_task

from tasks.http.errors import (
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
    UnknownOutcomeError,
)
from tasks.runtime import WorkerRuntime, runtime
from worker import metrics
from worker.celery_app import LANES_TICK_TASK
from worker.config import Settings
from worker.stores.lanes import BreakerPolicy, Gate, LaneLimits, LaneStore, Verdict
from worker.stores.ledger import AttemptRecord, Begin, BeginDecision
from worker.stores.models import AttemptOutcome, UnitState

__all__ = [
    "FUNDS_REASONS",
    "LANES_TICK_TASK",
    "LaneCall",
    "SetAside",
    "breaker_policy",
    "enter",
    "is_funds",
    "limits_for",
    "lane_store",
    "tick",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# A rate-limited lane whose limits defer a unit longer than this parks it in the ledger
# (live score = when it may go) rather than holding a worker.
IN_FLIGHT_POLL_SECONDS = 0.02
IN_FLIGHT_COME_BACK_SECONDS = 0.25
DEFAULT_SLOW_DOWN_SECONDS = 1.0  # a 429 without Retry-After
RELEASE_CAP = 1000  # units released per lane per tick at most

# The answers that mean the money or a cap ran out (reason slugs of the typed errors).
# Ifeelgoods documents a promotion budget consumed by each redemption (providers.md 1.6)
# and a reward sub-state ``no_allocation`` (1.7) but no error for an empty budget: we
# read ``no_allocation`` / ``budget_exhausted`` as the error name [DESIGN]. RewardOps
# documents program and offer caps as ``status_reason`` values (2.7); a create refused
# with one of them as its reason is a cap [DESIGN]. Member and segment caps concern one
# recipient, not the lane: those stay permanent errors.
FUNDS_REASONS: dict[str, frozenset[str]] = {
    "ifeelgoods": frozenset({"no_allocation", "budget_exhausted"}),
    "rewardops": frozenset(
        {"program_cap_internal", "program_cap_supplier", "offer_cap_internal", "offer_cap_supplier"}
    ),
}


def is_funds(error: BaseException) -> bool:
    """True when a provider refused because the money or a programme cap ran out."""
    return isinstance(error, PermanentProviderError) and error.reason in FUNDS_REASONS.get(
        error.provider, frozenset()
    )


def limits_for(settings: Settings, provider: str) -> LaneLimits:
    """The provider's in-flight cap and rate (``{PROVIDER}_MAX_IN_FLIGHT`` etc.)."""
    return LaneLimits(
        max_in_flight=int(getattr(settings, f"{provider}_max_in_flight", 0)),
        rate_per_second=float(getattr(settings, f"{provider}_rate_per_second", 0.0)),
    )


def breaker_policy(settings: Settings) -> BreakerPolicy:
    return BreakerPolicy(
        consecutive_failures=settings.lane_breaker_failures,
        error_rate=settings.lane_breaker_error_rate,
        window_seconds=settings.lane_breaker_window_seconds,
        min_calls=settings.lane_breaker_min_calls,
        probe_seconds=settings.lane_probe_seconds,
        funds_probe_seconds=settings.lane_funds_probe_seconds,
    )


_stores: dict[int, LaneStore] = {}


def lane_store(rt: WorkerRuntime) -> LaneStore:
    """One LaneStore per runtime (its Lua scripts registered once)."""
    store = _stores.get(id(rt))
    if store is None:
        store = _stores[id(rt)] = LaneStore(rt.redis, rt.keys)
    return store


class SetAside(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The unit was handed back to wait in its lane; ``action``/``state`` for the Outcome."""

    def __init__(self, action: str, state: str) -> None:
        super().__init__(action)
        self.action = action
        self.state = state


@dataclass
class LaneCall:
    """One unit's passage through its provider's lane."""

    rt: WorkerRuntime
    provider: str
    begin: Begin
    started: float
    task_id: str
    gate: Gate | None = None
    set_aside: SetAside | None = None

    @property
    def _store(self) -> LaneStore:
        return lane_store(self.rt)

    @property
    def unit_id(self) -> str:
        assert self.begin.unit is not None
        return self.begin.unit.id

    def run(self, call: Callable[[], T]) -> T:
        """Make the provider call and tell the lane how it went.

        Raises:
            SetAside: the answer closed the lane (or it was closed meanwhile): the unit
                waits there instead of spending an attempt.
            ProviderError (and anything else the call raised): the caller's usual handling.
        """
        try:
            result = call()
        except RateLimitedError as exc:
            wait = exc.retry_after if exc.retry_after is not None else DEFAULT_SLOW_DOWN_SECONDS
            self._record("rate_limited", retry_after=wait, reason=exc.reason)
            log.warning(
                "lane %s slowed down by a 429 for %.1f s",
                self.provider,
                wait,
                extra={"lane": self.provider, "lane_reason": "rate_limited"},
            )
            self._hand_back(exc, come_back_at=time.time() + wait, park=False)
            raise self._aside("throttled") from exc
        except PermanentProviderError as exc:
            if not is_funds(exc):
                self._record("answered")
                raise
            verdict = self._record("funds", reason=exc.reason)
            self._hand_back(exc, park=True)
            raise self._aside(f"waiting-{verdict.state}") from exc
        except Exception as exc:
            if isinstance(exc, ProviderError) and not isinstance(exc, TransientProviderError):
                self._record("answered")  # 412 and friends: the provider is up
                raise
            reason = exc.reason if isinstance(exc, ProviderError) else "unexpected"
            verdict = self._record("failure", reason=reason)
            if verdict.open and self.gate is not None and self.gate.decision != "probe":
                raise
            # The lane is not open (this failure tripped it, or it tripped meanwhile), or a
            # probe failed: wait in the lane, keeping the unit's look-up rule.
            self._hand_back(exc, park=not verdict.open)
            raise self._aside(f"waiting-{verdict.state}") from exc
        self._record("success")
        return result

    # internals ------------------------------------------------------------------------
    def _record(self, outcome: str, *, retry_after: float = 0.0, reason: str = "") -> Verdict:
        assert self.gate is not None
        verdict = self._store.done(
            self.provider,
            self.unit_id,
            self.gate.slot,
            outcome,
            now=time.time(),
            breaker=breaker_policy(self.rt.settings),
            retry_after=retry_after,
            reason=reason,
        )
        if verdict.transition in ("broken", "paused", "opened"):
            on_transition(self.rt, self.provider, verdict)
        return verdict

    def _hand_back(
        self, error: BaseException, *, park: bool, come_back_at: float | None = None
    ) -> None:
        now = time.time()
        record = AttemptRecord(
            attempt=self.begin.attempt,
            at=round(self.started, 3),
            mode=self.begin.decision,
            outcome=AttemptOutcome.LANE_WAIT if park else AttemptOutcome.LANE_THROTTLED,
            duration_ms=int((now - self.started) * 1000),
            error_type=type(error).__name__,
            reason=str(getattr(error, "reason", "unexpected")),
            status_code=getattr(error, "status_code", None),
            task_id=self.task_id,
        )
        self._store.set_aside(
            self.provider,
            self.unit_id,
            self.begin.attempt,
            restore=self._state_after(error).value,
            now=now,
            come_back_at=come_back_at
            if come_back_at is not None
            else now + self.rt.settings.lane_recheck_seconds,
            park=park,
            clear_first_attempt=False,
            record=record.to_json(),
        )

    def _state_after(self, error: BaseException) -> UnitState:
        """The state that makes the next attempt do the right first call: follow an
        accepted order again; look the key up when the provider may hold the order (an
        unknown outcome now, or a look-up that never got its answer); else submit."""
        if self.begin.decision is BeginDecision.FOLLOW:
            return UnitState.AWAITING_DELIVERY
        unknown = isinstance(error, UnknownOutcomeError) or not isinstance(error, ProviderError)
        if unknown or self.begin.decision is BeginDecision.LOOKUP:
            return UnitState.UNKNOWN
        return UnitState.RETRYING

    def _aside(self, action: str) -> SetAside:
        self.set_aside = SetAside(action, self.begin.previous_state)
        return self.set_aside


def enter(rt: WorkerRuntime, provider: str, begin: Begin, *, task_id: str = "") -> LaneCall:
    """Ask the lane whether this unit may call ``provider`` now.

    When it may, the returned call holds an in-flight slot (and, while the lane is broken
    or paused for funds, the probe lease). When it may not, the unit's attempt was handed
    back and ``set_aside`` says so: the caller returns without calling the provider.
    """
    assert begin.unit is not None
    call = LaneCall(rt, provider, begin, started=time.time(), task_id=task_id)
    store = lane_store(rt)
    settings = rt.settings
    limits = limits_for(settings, provider)
    slot = f"{begin.unit.id}#{begin.attempt}"
    budget_until = time.monotonic() + settings.lane_max_wait_seconds
    while True:
        remaining = max(0.0, budget_until - time.monotonic())
        gate = store.admit(
            provider,
            begin.unit.id,
            now=time.time(),
            limits=limits,
            slot_ttl=settings.task_lease_seconds,
            max_wait=remaining,
            slot=slot,
        )
        if gate.goes:
            if gate.seconds > 0:
                time.sleep(gate.seconds)  # our reserved token's time
            if gate.decision == "probe":
                log.info(
                    "lane %s: this unit probes the provider",
                    provider,
                    extra={"lane": provider, "unit_id": begin.unit.id},
                )
            call.gate = gate
            return call
        if gate.decision == "defer" and gate.detail == "in_flight" and remaining > 0:
            time.sleep(min(IN_FLIGHT_POLL_SECONDS, remaining))
            continue
        break
    now = time.time()
    # Back to the state it had, so the next begin decides as before (a crashed attempt's
    # unit becomes UNKNOWN: its outcome is not known, look up first).
    previous = begin.previous_state
    restore = UnitState.UNKNOWN.value if previous == UnitState.SUBMITTING else previous
    if gate.decision == "wait":
        come_back = now + settings.lane_recheck_seconds
    elif gate.detail == "in_flight":
        come_back = now + IN_FLIGHT_COME_BACK_SECONDS
    else:
        come_back = now + gate.seconds
    store.set_aside(
        provider,
        begin.unit.id,
        begin.attempt,
        restore=restore,
        now=now,
        come_back_at=come_back,
        park=gate.decision == "wait",
        clear_first_attempt=previous == UnitState.PENDING,
    )
    action = f"waiting-{gate.detail}" if gate.decision == "wait" else "throttled"
    call.set_aside = SetAside(action, previous)
    return call


def on_transition(rt: WorkerRuntime, provider: str, verdict: Verdict) -> None:
    """Signals for one lane transition (seen by exactly one caller, by construction)."""
    to = "funds" if verdict.transition == "paused" else verdict.transition
    metrics.lane_transition(provider, to)
    store = lane_store(rt)
    if verdict.transition == "opened":
        log.info("lane %s open again", provider, extra={"lane": provider})
        store.log_transition(provider, "opened", "", by="probe")
        release_waiting(store, rt.settings, provider)
        return
    log.warning(
        "lane %s %s: %s",
        provider,
        verdict.state,
        verdict.reason,
        extra={"lane": provider, "lane_reason": verdict.reason},
    )
    store.log_transition(provider, verdict.transition, verdict.reason, by=verdict.transition)
    report_transition(provider, verdict.state, verdict.reason)


def report_transition(provider: str, state: str, reason: str) -> None:
    """One Sentry event per transition to broken or funds-paused (never per unit)."""
    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("lane", provider)
        scope.set_tag("lane_state", state)
        scope.set_tag("reason", reason or "none")
        scope.fingerprint = ["lane", provider, state, reason]
        sentry_sdk.capture_message(f"Provider lane {provider} {state}: {reason}", level="error")


def release_waiting(
    store: LaneStore, settings: Settings, provider: str, *, now: float | None = None
) -> int:
    """Release one tick's worth of an open lane's waiting units, oldest first.

    A little more than the lane's rate allows in one tick, so the limiter (not the
    release) sets the pace, without publishing a whole backlog at once.
    """
    rate = limits_for(settings, provider).rate_per_second
    per_tick = math.ceil(rate * settings.lane_tick_seconds * 1.5)
    count = RELEASE_CAP if rate <= 0 else min(RELEASE_CAP, per_tick)
    return store.release(provider, max(1, count), now=now)


def tick_once(store: LaneStore, settings: Settings, *, now: float | None = None) -> dict[str, int]:
    """One pass over every lane: release waiting units, or let a probe through."""
    now = time.time() if now is None else now
    released: dict[str, int] = {}
    for name in store.names():
        view = store.view(name, now=now)
        if view.state == "open" and view.waiting:
            released[name] = release_waiting(store, settings, name, now=now)
        elif view.waiting and store.probe_due(name, now=now):
            released[name] = store.release(name, 1, now=now)  # the oldest becomes the probe
    return released


@shared_task(  # type: ignore[untyped-decorator]
    # No task events: a run every second would fill Flower's task list.
    name=LANES_TICK_TASK,
    bind=True,
    ignore_result=True,
    send_events=False,
)
def tick(self: Task) -> dict[str, int]:
    """Beat: release waiting units of open lanes, start due probes of closed ones."""
    rt = runtime(self)
    released = tick_once(lane_store(rt), rt.settings)
    if released:
        log.info("lanes released %s", json.dumps(released))
    return released
