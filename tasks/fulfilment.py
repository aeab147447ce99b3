"""Fulfilment of one reward unit: the plain function every delivery of a task calls.

Called by :func:`tasks.entrypoints.fulfil_reward`; the adapters are
:mod:`tasks.providers.adapters`, the runtime :mod:`tasks.runtime`.

ledger.begin            terminal / busy / early → nothing to do (redelivery is harmless)
route (rules)           no rule → UNROUTABLE (+ dead letter, visible, replayable)
provider lane           closed or over its limits → the unit waits (tasks/lanes.py)
provider adapter        deterministic key; LOOKUP before any resubmit
  delivered             → FULFILLED (codes stored, never logged)
  accepted              → AWAITING_DELIVERY, followed up by the scheduler
  rate limited / transient → RETRYING at backoff (≥ Retry-After), bounded
  unknown outcome       → UNKNOWN at backoff; the next attempt looks up first
  permanent / exhausted → DEAD_LETTERED (+ one Sentry event)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from tasks import lanes
from tasks.http.deadline import attempt_deadline
from tasks.http.errors import (
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    UnknownOutcomeError,
)
from tasks.http.redaction import redact_message
from tasks.providers.adapters import ProviderResult, Recipient, ResultKind, provider_key
from tasks.routing import Route
from tasks.runtime import WorkerRuntime
from tasks.sources import coniq_outbound
from worker import metrics, observability
from worker.stores.ledger import AttemptRecord, BeginDecision
from worker.stores.models import AttemptOutcome, Unit, UnitState

__all__ = ["fulfil_unit", "Outcome"]

# The part of the lease provider calls may use; the rest closes the attempt in the ledger.
CALLS_SHARE_OF_LEASE = 0.8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one call did, for logs, metrics and tests."""

    unit_id: str
    action: str  # skipped-<decision> | fulfilled | awaiting | retrying | unknown | dead_lettered...
    state: str = ""


def fulfil_unit(unit_id: str, rt: WorkerRuntime, *, task_id: str = "") -> Outcome:
    """Run one attempt for ``unit_id``; every exit leaves the ledger consistent."""
    started = time.time()
    begin = rt.ledger.begin(unit_id, now=started, lease_seconds=rt.settings.task_lease_seconds)
    if not begin.decision.proceeds:
        return Outcome(unit_id, f"skipped-{begin.decision.value}", begin.previous_state)
    unit = begin.unit
    assert unit is not None  # a proceeding begin() returns the unit
    if begin.attempt == 1:
        metrics.observe_pickup(started - unit.created_at)
    observability.unit_event(
        f"unit attempt {begin.attempt} begins ({begin.decision.value})", unit, task_id=task_id
    )
    attempt = _Attempt(rt, unit, begin.attempt, begin.decision, started, task_id)

    route = rt.rules.decide(unit.source, unit.event_type, unit.match)
    if route is None:
        return attempt.unroutable()
    if not isinstance(route, Route):  # an ignore rule: recorded, deliberately not fulfilled
        return attempt.ignored(route.name)
    recipient = _recipient(begin.event_body)
    if recipient is None:
        return attempt.dead_letter("missing-recipient", route.provider, route.product, None)
    key = provider_key(unit_id)
    # Every provider call of this attempt ends within the lease (no time limit kills a
    # pool thread): a later delivery of the unit never overlaps one of our calls.
    deadline = max(
        0.0, started + rt.settings.task_lease_seconds * CALLS_SHARE_OF_LEASE - time.time()
    )
    with (
        observability.unit_context(unit, provider=route.provider, task_id=task_id),
        attempt_deadline(deadline),
    ):
        lane = lanes.enter(rt, route.provider, begin, task_id=task_id)
        if lane.set_aside is not None:  # the lane is closed or full: wait, no attempt used
            return Outcome(unit_id, lane.set_aside.action, lane.set_aside.state)
        try:
            result = lane.run(lambda: _call_provider(rt, route, key, recipient, begin.decision))
        except lanes.SetAside as aside:
            return Outcome(unit_id, aside.action, aside.state)
        except RateLimitedError as exc:
            return attempt.retry(UnitState.RETRYING, exc, route.to_dict(), exc.retry_after)
        except UnknownOutcomeError as exc:
            return attempt.retry(UnitState.UNKNOWN, exc, route.to_dict(), None)
        except PermanentProviderError as exc:
            return attempt.dead_letter(exc.reason, route.provider, route.product, exc)
        except ProviderError as exc:  # transient (and anything else typed as retryable)
            return attempt.retry(UnitState.RETRYING, exc, route.to_dict(), None)
        except Exception as exc:
            # A bug or an unexpected library error after we may have sent the order: treat
            # the outcome as unknown so the next attempt looks the key up first.
            log.exception("unexpected error fulfilling a unit", extra={"unit_id": unit_id})
            return attempt.retry(UnitState.UNKNOWN, exc, route.to_dict(), None)
        return attempt.succeeded(result, route.to_dict())


def _call_provider(
    rt: WorkerRuntime, route: Route, key: str, recipient: Recipient, decision: BeginDecision
) -> ProviderResult:
    """The provider call, timed by provider and outcome, and logged (no codes)."""
    started = time.perf_counter()
    outcome, reference = "error", ""
    try:
        result = rt.adapter(route.provider).fulfil(key, route, recipient, decision)
        outcome, reference = result.kind.value, result.reference
        return result
    except ProviderError as exc:
        outcome = _call_outcome(exc)
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.observe_provider_call(route.provider, outcome, elapsed)
        log.info(
            "provider call (%s) %s in %d ms",
            decision.value,
            outcome,
            elapsed * 1000,
            extra={"provider_ref": reference} if reference else None,
        )


def _call_outcome(error: ProviderError) -> str:
    """A small, fixed label set for the latency histogram."""
    if isinstance(error, RateLimitedError):
        return "rate_limited"
    if isinstance(error, UnknownOutcomeError):
        return "unknown"
    if isinstance(error, PermanentProviderError):
        return "permanent"
    return "transient"


def _recipient(event_body: str) -> Recipient | None:
    """Who receives the reward, from the stored event (None: event gone or no email)."""
    if not event_body:
        return None
    data: dict[str, Any] = dict(json.loads(event_body).get("data") or {})
    person = data.get("recipient") or data.get("customer") or {}
    email = person.get("email")
    if not email:
        return None
    return Recipient(
        email=str(email),
        first_name=str(person.get("first_name") or ""),
        last_name=str(person.get("last_name") or ""),
        customer_id=str(person.get("id") or ""),
        address=person.get("address") or None,
    )


class _Attempt:
    """Closes one attempt in the ledger with the right state, record and schedule."""

    def __init__(
        self,
        rt: WorkerRuntime,
        unit: Unit,
        number: int,
        decision: BeginDecision,
        started: float,
        task_id: str,
    ) -> None:
        self.rt, self.unit, self.number = rt, unit, number
        self.decision, self.started, self.task_id = decision, started, task_id

    def _record(self, outcome: AttemptOutcome, error: BaseException | None = None) -> AttemptRecord:
        now = time.time()
        return AttemptRecord(
            attempt=self.number,
            at=round(self.started, 3),
            mode=self.decision,
            outcome=outcome,
            duration_ms=int((now - self.started) * 1000),
            error_type=type(error).__name__ if error else "",
            reason=getattr(error, "reason", "unexpected") if error else "",
            status_code=getattr(error, "status_code", None) if error else None,
            task_id=self.task_id,
        )

    def succeeded(self, result: ProviderResult, route: dict[str, Any]) -> Outcome:
        now = time.time()
        fields: dict[str, str | float | int] = {
            "provider": route["provider"],
            "route": json.dumps(route),
            "provider_ref": result.reference,
        }
        if result.kind is ResultKind.ACCEPTED:
            next_at = now + self.rt.settings.delivery_poll_seconds
            # Following a delivery is not a failure: only the time horizon bounds it.
            if next_at - self._first_attempt_at() > self.rt.retry.horizon_seconds:
                return self.dead_letter(
                    "delivery-timeout", route["provider"], _product(route), None
                )
            fields["next_attempt_at"] = next_at
            fields["round_attempts"] = 0  # the attempt budget counts consecutive failures
            self._finish(UnitState.AWAITING_DELIVERY, AttemptOutcome.AWAITING, fields, next_at)
            observability.unit_event(
                "unit awaiting delivery",
                self.unit,
                provider=route["provider"],
                provider_ref=result.reference,
                task_id=self.task_id,
            )
            return Outcome(self.unit.id, "awaiting", UnitState.AWAITING_DELIVERY)
        fields.update(self.rt.ledger.sealed_fields(result.codes, result.links))
        fields["fulfilled_at"] = now
        # The loop back to Coniq: queue the unit for recording *before* the ledger says
        # FULFILLED, so a worker dying in between leaves a note the drain keeps until the
        # unit is fulfilled (it drops it if the unit ends otherwise). A Redis SADD that
        # never raises; a no-op unless Coniq-sourced and configured.
        coniq_outbound.note_fulfilled(self.rt, self.unit)
        if self._finish(UnitState.FULFILLED, AttemptOutcome.FULFILLED, fields, None):
            self._count_terminal(UnitState.FULFILLED, route["provider"])
        observability.unit_event(
            "unit fulfilled",
            self.unit,
            provider=route["provider"],
            provider_ref=result.reference,
            task_id=self.task_id,
        )
        return Outcome(self.unit.id, "fulfilled", UnitState.FULFILLED)

    def retry(
        self,
        state: UnitState,
        error: BaseException,
        route: dict[str, Any],
        retry_after: float | None,
    ) -> Outcome:
        rounds = self.rt.ledger.round_attempts(self.unit.id)
        delay = self.rt.retry.delay(rounds, retry_after)
        retry_at = time.time() + delay
        if self.rt.retry.exhausted(rounds, self._first_attempt_at(), retry_at):
            return self.dead_letter("retries-exhausted", route["provider"], _product(route), error)
        fields: dict[str, str | float | int] = {
            "provider": route["provider"],
            "route": json.dumps(route),
            "next_attempt_at": retry_at,
            "last_error": json.dumps(_error_summary(error)),
        }
        outcome = AttemptOutcome.UNKNOWN if state is UnitState.UNKNOWN else AttemptOutcome.RETRY
        reason = str(getattr(error, "reason", "unexpected"))
        if self._finish(state, outcome, fields, retry_at, error=error):
            metrics.retry_scheduled(route["provider"], reason)
        observability.unit_event(
            f"unit {outcome}: {reason}; next attempt in {delay:.1f} s",
            self.unit,
            level=logging.WARNING,
            provider=route["provider"],
            task_id=self.task_id,
        )
        return Outcome(self.unit.id, outcome, state)

    def ignored(self, rule: str) -> Outcome:
        now = time.time()
        done = self.rt.ledger.finish(
            self.unit.id,
            self.number,
            UnitState.IGNORED,
            self._record(AttemptOutcome.IGNORED),
            now=now,
            next_check_at=None,
            fields={"ignored_by": rule},
        )
        if done:
            self._count_terminal(UnitState.IGNORED, "")
        observability.unit_event(f"unit ignored by rule {rule}", self.unit, task_id=self.task_id)
        return Outcome(self.unit.id, "ignored", UnitState.IGNORED)

    def unroutable(self) -> Outcome:
        """Dead-letter a unit no rule routes, naming what found no rule and in which rules
        (their fingerprint lets a replay tell whether the rules changed since)."""
        now = time.time()
        record = self._record(AttemptOutcome.UNROUTABLE)
        rules = self.rt.rules
        why = rules.explain_no_route(self.unit.source, self.unit.event_type, self.unit.match)
        letter = self._letter("unroutable", "", "", None, now)
        letter.update(
            detail=why.detail,
            unrouted_field=why.field,
            unrouted_value=why.value,
            rules_file=why.rules_file,
            rules_fingerprint=rules.fingerprint,
        )
        done = self.rt.ledger.finish(
            self.unit.id,
            self.number,
            UnitState.UNROUTABLE,
            record,
            now=now,
            next_check_at=None,
            index=self.rt.keys.unroutable,
            dead_letter=letter,
        )
        if done:
            self._count_terminal(UnitState.UNROUTABLE, "")
            observability.report_dead_letter(
                self.unit,
                "unroutable",
                "",
                None,
                task_id=self.task_id,
                context={"detail": why.detail, "field": why.field, "value": why.value},
            )
        return Outcome(self.unit.id, "unroutable", UnitState.UNROUTABLE)

    def dead_letter(
        self, reason: str, provider: str, product: str, error: BaseException | None
    ) -> Outcome:
        now = time.time()
        letter = self._letter(reason, provider, product, error, now)
        fields: dict[str, str | float | int] = {
            "provider": provider,
            "dead_letter_id": self.unit.id,
            "last_error": json.dumps(_error_summary(error) if error else {"reason": reason}),
        }
        done = self.rt.ledger.finish(
            self.unit.id,
            self.number,
            UnitState.DEAD_LETTERED,
            self._record(AttemptOutcome.DEAD_LETTER, error),
            now=now,
            next_check_at=None,
            fields=fields,
            dead_letter=letter,
        )
        if done:
            self._count_terminal(UnitState.DEAD_LETTERED, provider)
            observability.report_dead_letter(
                self.unit, reason, provider, error, task_id=self.task_id
            )
        return Outcome(self.unit.id, "dead_lettered", UnitState.DEAD_LETTERED)

    def _letter(
        self, reason: str, provider: str, product: str, error: BaseException | None, now: float
    ) -> dict[str, str | float | int]:
        summary = _error_summary(error) if error else {}
        return {
            "id": self.unit.id,
            "event_id": self.unit.event_id,
            "source": self.unit.source,
            "provider": provider,
            "product": product,
            "reason": reason,
            "error_type": summary.get("type", ""),
            "status_code": summary.get("status_code") or "",
            "detail": summary.get("reason", reason),
            # The provider's own words, redacted; every letter writes every field, so a
            # letter written again never keeps an earlier failure's explanation.
            "provider_message": redact_message(getattr(error, "detail", None)),
            "unrouted_field": "",
            "unrouted_value": "",
            "rules_file": "",
            "rules_fingerprint": "",
            # Attempts that reached the lane's provider, not the ones it handed back.
            "attempts": max(1, self.number - self.unit.set_asides),
            "created_at": now,
            "status": "waiting",
        }

    def _finish(
        self,
        state: UnitState,
        outcome: AttemptOutcome,
        fields: dict[str, str | float | int],
        next_check_at: float | None,
        error: BaseException | None = None,
    ) -> bool:
        """True when the ledger took the transition (False: this attempt was fenced out)."""
        return self.rt.ledger.finish(
            self.unit.id,
            self.number,
            state,
            self._record(outcome, error),
            now=time.time(),
            next_check_at=next_check_at,
            fields=fields,
        )

    def _count_terminal(self, state: UnitState, provider: str) -> None:
        """Once per unit and terminal state (see ``Ledger.first_time_in``)."""
        if self.rt.ledger.first_time_in(self.unit.id, state):
            metrics.unit_terminal(state, provider)

    def _first_attempt_at(self) -> float:
        return float(self.rt.ledger.field(self.unit.id, "first_attempt_at") or self.started)


def _product(route: dict[str, Any]) -> str:
    if route["provider"] == "ifeelgoods":
        return f"{route['promotion_id']}/{route['sku']}"
    return f"{route['program_id']}/{route['item_order_token']}"


def _error_summary(error: BaseException | None) -> dict[str, Any]:
    """Redacted: type, metric-safe reason and status only, never the message."""
    if error is None:
        return {}
    return {
        "type": type(error).__name__,
        "reason": getattr(error, "reason", "unexpected"),
        "status_code": getattr(error, "status_code", None),
    }
