"""Admin API: fulfilment status and dead letters, behind ``ADMIN_TOKEN``.

    GET    /fulfillments/{event id}        each unit's state, attempts, references (codes masked)
    GET    /dead-letters                   waiting letters, filtered
    GET    /dead-letters/{id}              one letter with its attempt history
    POST   /dead-letters/{id}/replay       back to the scheduler under the same key
    POST   /dead-letters/replay            bulk replay by filter, dry_run, rate-capped
    DELETE /dead-letters/{id}              discard (recorded in the audit log)

The edge never calls a provider: a replay only moves the unit back onto the ledger's
schedule, and the scheduler publishes it. Reusing the unit's key is what makes a replay
unable to issue a second reward.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from webhooks.errors import ProblemError
from worker.stores.dead_letters import DeadLetters, ReplayResult
from worker.stores.inbox import Inbox
from worker.stores.ledger import Ledger
from worker.stores.models import TERMINAL_STATES, Unit, UnitState

__all__ = ["bp", "mask_code", "REPLAY_RATE_PER_SECOND", "BULK_REPLAY_MAX"]

bp = Blueprint("admin", __name__)
F = TypeVar("F", bound=Callable[..., ResponseReturnValue])
# A bulk replay is spread over time so a fixed provider is not hit by a thundering herd.
REPLAY_RATE_PER_SECOND = 20.0
BULK_REPLAY_MAX = 1000  # letters per bulk request


def mask_code(code: str) -> str:
    """Show only the last four characters of a reward code."""
    return "****" + code[-4:] if len(code) > 6 else "****"


def _ctx() -> Any:
    return current_app.extensions["rewardrelay"]


def require_admin(view: F) -> F:
    """Refuse the request unless it carries ``Authorization: Bearer <ADMIN_TOKEN>``."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        expected = _ctx().settings.admin_token
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not expected or scheme.lower() != "bearer" or not token:
            raise ProblemError(
                401,
                "unauthorized",
                "An admin bearer token is required.",
                headers={"WWW-Authenticate": 'Bearer realm="rewardrelay-admin"'},
            )
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise ProblemError(
                401,
                "unauthorized",
                "The admin token is not valid.",
                headers={
                    "WWW-Authenticate": 'Bearer realm="rewardrelay-admin", error="invalid_token"'
                },
            )
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def _stores() -> tuple[Inbox, Ledger, DeadLetters]:
    ctx = _ctx()
    return Inbox(ctx.redis, ctx.keys), Ledger(ctx.redis, ctx.keys), DeadLetters(ctx.redis, ctx.keys)


def unit_view(unit: Unit, ledger: Ledger) -> dict[str, Any]:
    return {
        "id": unit.id,
        "state": unit.state.value,
        "attempts": unit.attempts,
        "provider": unit.provider,
        "provider_ref": unit.provider_ref,
        "codes": [mask_code(c) for c in ledger.codes(unit.id)],
        "last_error": unit.last_error,
        "next_attempt_at": unit.next_attempt_at or None,
        "dead_letter_id": unit.dead_letter_id or None,
        "updated_at": unit.updated_at,
    }


def event_state(units: list[Unit]) -> str:
    """fulfilled: all done; failed: any dead-lettered/unroutable; else in_progress."""
    if any(u.state in (UnitState.DEAD_LETTERED, UnitState.UNROUTABLE) for u in units):
        return "failed"
    if all(u.state in TERMINAL_STATES for u in units):
        return "fulfilled"
    return "in_progress"


@bp.get("/fulfillments/<path:event_id>")
@require_admin
def get_fulfillment(event_id: str) -> ResponseReturnValue:
    inbox, ledger, _ = _stores()
    event = inbox.get(event_id)
    if event is None:
        raise ProblemError(404, "event-not-found", f"No accepted event has id {event_id!r}.")
    units = ledger.get_many(event.unit_ids)
    return jsonify(
        event_id=event.id,
        source=event.source,
        type=event.type,
        received_at=event.received_at,
        state=event_state(units),
        units=[unit_view(u, ledger) for u in units],
    )


def _filters(args: Any) -> dict[str, Any]:
    since_raw = args.get("since")
    since: float | None = None
    if since_raw not in (None, ""):
        try:
            since = float(since_raw)
        except (TypeError, ValueError):
            raise ProblemError(
                400,
                "invalid-filter",
                "since must be a Unix timestamp in seconds.",
                errors={"since": ["must be a number"]},
            ) from None
    limit_raw = args.get("limit")
    limit = 100
    if limit_raw not in (None, ""):
        try:
            limit = int(limit_raw)
        except (TypeError, ValueError):
            limit = -1
        if not 1 <= limit <= BULK_REPLAY_MAX:
            raise ProblemError(
                400,
                "invalid-filter",
                f"limit must be an integer from 1 to {BULK_REPLAY_MAX}.",
                errors={"limit": ["out of range"]},
            )
    return {
        "source": args.get("source") or None,
        "provider": args.get("provider") or None,
        "reason": args.get("reason") or None,
        "since": since,
        "limit": limit,
    }


@bp.get("/dead-letters")
@require_admin
def list_dead_letters() -> ResponseReturnValue:
    _, _, letters = _stores()
    items = [letter.to_dict() for letter in letters.iter_waiting(**_filters(request.args))]
    return jsonify(items=items, count=len(items))


@bp.get("/dead-letters/<path:letter_id>")
@require_admin
def get_dead_letter(letter_id: str) -> ResponseReturnValue:
    _, ledger, letters = _stores()
    letter = letters.get(letter_id)
    if letter is None:
        raise ProblemError(404, "dead-letter-not-found", f"No dead letter has id {letter_id!r}.")
    # The letter's ``attempts`` count is replaced by the full attempt history.
    return jsonify({**letter.to_dict(), "attempts": ledger.attempts(letter_id)})


@bp.post("/dead-letters/<path:letter_id>/replay")
@require_admin
def replay_dead_letter(letter_id: str) -> ResponseReturnValue:
    _, _, letters = _stores()
    result = letters.replay(letter_id, now=time.time(), actor="admin-api")
    if result is ReplayResult.NOT_FOUND:
        raise ProblemError(404, "dead-letter-not-found", f"No dead letter has id {letter_id!r}.")
    if result is not ReplayResult.REPLAYED:
        raise ProblemError(
            409, "dead-letter-not-waiting", f"Dead letter {letter_id!r} was already handled."
        )
    return jsonify(id=letter_id, result=result.value), 202


@bp.post("/dead-letters/replay")
@require_admin
def replay_dead_letters() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ProblemError(400, "invalid-body", "The body must be a JSON object of filters.")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ProblemError(
            422,
            "validation-failed",
            "dry_run must be a boolean.",
            errors={"dry_run": ["must be a boolean"]},
        )
    filters = _filters({k: "" if v is None else str(v) for k, v in body.items() if k != "dry_run"})
    _, _, letters = _stores()
    matched = list(letters.iter_waiting(**filters))
    now = time.time()
    replayed: list[str] = []
    for position, letter in enumerate(matched):
        at = now + position / REPLAY_RATE_PER_SECOND
        result = letters.replay(letter.id, now=now, actor="admin-api", dry_run=dry_run, at=at)
        if result in (ReplayResult.REPLAYED, ReplayResult.WOULD_REPLAY):
            replayed.append(letter.id)
    return jsonify(dry_run=dry_run, matched=len(matched), replayed=replayed)


@bp.delete("/dead-letters/<path:letter_id>")
@require_admin
def discard_dead_letter(letter_id: str) -> ResponseReturnValue:
    _, _, letters = _stores()
    if letters.get(letter_id) is None:
        raise ProblemError(404, "dead-letter-not-found", f"No dead letter has id {letter_id!r}.")
    body = request.get_json(silent=True)
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    if not letters.discard(letter_id, now=time.time(), actor="admin-api", reason=reason):
        raise ProblemError(
            409, "dead-letter-not-waiting", f"Dead letter {letter_id!r} was already handled."
        )
    return jsonify(id=letter_id, status="discarded")
