"""Admin API: fulfilment status and dead letters, behind ``ADMIN_TOKEN``.

    GET    /fulfillments/{event id}        each unit's state, attempts, references (codes masked)
    GET    /dead-letters                   waiting letters, filtered
    GET    /dead-letters/{id}              one letter with its attempt history
    POST   /dead-letters/{id}/replay       back to the scheduler under the same key
    POST   /dead-letters/replay            bulk replay by filter, dry_run, rate-capped
    DELETE /dead-letters/{id}              discard (recorded in the audit log)

An unroutable letter is not replayed while the routing rules decide as they did when it
was written (409 ``rules-unchanged``; ``{"force": true}`` replays it anyway): the replay
could only dead-letter it again.

Request bodies (bulk replay, discard) are read by ``jsonbody.read_admin_body``: JSON
objects only, unknown keys and wrong types refused naming the field. A bulk replay
requires a body (``{}`` replays with the defaults): an empty or lost body must not turn
into "everything, for real". A discard's body (a reason) is optional.

The edge never calls a provider: a replay only moves the unit back onto the ledger's
schedule, and the scheduler publishes it. Reusing the unit's key is what makes a replay
unable to issue a second reward.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import redis
from flask import Blueprint, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate
from werkzeug.routing import PathConverter

from tasks.routing import PROVIDERS, RulesError, load_rules
from webhooks import token_guesses
from webhooks.errors import ProblemError
from webhooks.jsonbody import read_admin_body, string_keys
from webhooks.schemas import MAX_TEXT_CHARS, SOURCES
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
DEFAULT_LIMIT = 100  # letters a listing or bulk replay covers unless told otherwise


class UnitIdConverter(PathConverter):
    """A unit (and dead-letter) id, ``{event id}:{line}:{index}``: event ids may hold
    ``/``, so it spans segments like ``path``, but it must end in ``:<line>:<index>``.

    That is what keeps ``/dead-letters/replay`` (the bulk replay) from also reading as
    the letter named ``replay`` for GET and DELETE: no letter has that id, so the router
    answers 405 (POST only) instead of looking one up.
    """

    regex = "[^/].*?:[0-9]+:[0-9]+"
    part_isolating = False


@bp.record_once
def _register_converter(state: BlueprintSetupState) -> None:
    # Recorded before the routes below, so it runs before their rules are added.
    state.app.url_map.converters["unit_id"] = UnitIdConverter


def mask_code(code: str) -> str:
    """Show only the last four characters of a reward code."""
    return "****" + code[-4:] if len(code) > 6 else "****"


def _ctx() -> Any:
    return current_app.extensions["rewardrelay"]


def require_admin(view: F) -> F:
    """Refuse the request unless it carries ``Authorization: Bearer <ADMIN_TOKEN>``.

    Wrong tokens count against the client address like the console's sign-in (one shared
    limit, :mod:`webhooks.token_guesses`): beyond it, 429 with Retry-After, whatever the
    token. A right token is never counted.
    """

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
        guesses = token_guesses.guesses_key()
        try:
            retry_after = token_guesses.count_guess(guesses)
            if retry_after:
                raise ProblemError(
                    429,
                    "too-many-token-guesses",
                    "Too many wrong admin tokens from this address; retry later.",
                    headers={"Retry-After": str(retry_after)},
                )
            right = hmac.compare_digest(token.strip().encode(), expected.encode())
            if right:
                token_guesses.take_back_guess(guesses)
        except redis.RedisError as exc:
            raise ProblemError(
                503,
                "store-unavailable",
                "The store is unavailable; retry later.",
                headers={"Retry-After": "5"},
            ) from exc
        if not right:
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
        "attempts": unit.provider_attempts,
        "waits": unit.set_asides,
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
    if event is None and _ctx().redis.exists(_ctx().keys.seen(event_id)):
        raise ProblemError(
            410,
            "event-expired",
            f"Event {event_id!r} finished and its data was deleted after the retention"
            " period; only its dedupe marker remains.",
        )
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


class FiniteNumber(fields.Field[float]):
    """A finite number: a JSON number, or a string holding one (query values, and what
    ``rewardrelay dlq`` sends); never NaN or an infinity."""

    default_error_messages = {"invalid": "Must be a finite number (Unix seconds)."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.make_error("invalid")
        try:
            number = float(value)
        except (ValueError, OverflowError):  # "yesterday"; an int past float's range
            raise self.make_error("invalid") from None
        if not math.isfinite(number):
            raise self.make_error("invalid")
        return number


class StrictBoolean(fields.Field[bool]):
    """``true`` or ``false`` only: ``"yes"`` or ``1`` must not turn a dry run into a real one."""

    default_error_messages = {"invalid": "Must be true or false."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def _one_of(choices: tuple[str, ...]) -> validate.OneOf:
    return validate.OneOf(choices, error="Must be one of: {choices}.")


class FilterSchema(Schema):
    """Which waiting letters a listing or a bulk replay covers (all when empty)."""

    class Meta:
        unknown = RAISE

    source = fields.String(allow_none=True, validate=_one_of(SOURCES))
    provider = fields.String(allow_none=True, validate=_one_of(PROVIDERS))
    reason = fields.String(allow_none=True, validate=validate.Length(min=1, max=MAX_TEXT_CHARS))
    since = FiniteNumber(allow_none=True)
    limit = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=BULK_REPLAY_MAX))


class BulkReplaySchema(FilterSchema):
    """``POST /dead-letters/replay``: the filters, a strict ``dry_run`` and an integer limit;
    ``force`` also replays unroutable letters whose rules have not changed."""

    limit = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=BULK_REPLAY_MAX)
    )
    dry_run = StrictBoolean(load_default=False)
    force = StrictBoolean(load_default=False)


class ReplaySchema(Schema):
    """``POST /dead-letters/{id}/replay``: an optional ``force`` (unroutable, same rules)."""

    class Meta:
        unknown = RAISE

    force = StrictBoolean(load_default=False)


class DiscardSchema(Schema):
    """``DELETE /dead-letters/{id}``: an optional reason, kept in the audit log."""

    class Meta:
        unknown = RAISE

    reason = fields.String(validate=validate.Length(max=MAX_TEXT_CHARS))


_QUERY_FILTERS = FilterSchema()
_BULK_REPLAY = BulkReplaySchema()
_DISCARD = DiscardSchema()
_REPLAY = ReplaySchema()
_fingerprints: dict[tuple[str, int, int], str] = {}


def rules_fingerprint_now(rules_file: Path) -> str:
    """The fingerprint of the rules a worker would load now (``RULES_FILE`` as it is).

    Parsed again only when the file changed (size or modification time).

    Raises:
        ProblemError: 409 ``rules-invalid``: the file does not load, so no worker would
            start with it and no replay can be judged.
    """
    try:
        stat = rules_file.stat()
        key = (str(rules_file), stat.st_mtime_ns, stat.st_size)
        if key not in _fingerprints:
            _fingerprints.clear()
            _fingerprints[key] = load_rules(rules_file).fingerprint
        return _fingerprints[key]
    except (OSError, RulesError) as exc:
        raise ProblemError(
            409,
            "rules-invalid",
            f"The routing rules do not load ({exc}); fix RULES_FILE before replaying.",
        ) from None


def rules_unchanged_message(letter_id: str) -> str:
    return (
        f"Dead letter {letter_id!r} is unroutable and the routing rules have not changed "
        "since: a replay would dead-letter it again. Add a rule for it (and restart the "
        "workers), or force the replay."
    )


def _query_filters() -> dict[str, Any]:
    """The listing's filters from the query string (empty values mean no filter).

    Raises:
        ProblemError: 422 ``invalid-filter`` naming each bad filter.
    """
    given = {name: value for name, value in request.args.items() if value != ""}
    try:
        loaded: dict[str, Any] = _QUERY_FILTERS.load(given, unknown=EXCLUDE)
    except ValidationError as exc:
        raise _invalid_filter(exc) from None
    return _filters(loaded)


def _filters(loaded: Mapping[str, Any]) -> dict[str, Any]:
    """``DeadLetters.iter_waiting`` arguments (None: no filter; 100 letters by default)."""
    filters = {name: loaded.get(name) for name in ("source", "provider", "reason", "since")}
    return {**filters, "limit": loaded.get("limit") or DEFAULT_LIMIT}


def _invalid_filter(exc: ValidationError) -> ProblemError:
    names = ", ".join(sorted(str(name) for name in exc.messages))
    return ProblemError(
        422,
        "invalid-filter",
        f"Invalid filter: {names}; see errors.",
        errors=string_keys(exc.messages),
    )


@bp.get("/dead-letters")
@require_admin
def list_dead_letters() -> ResponseReturnValue:
    _, _, letters = _stores()
    items = [letter.summary() for letter in letters.iter_waiting(**_query_filters())]
    return jsonify(items=items, count=len(items))


@bp.get("/dead-letters/<unit_id:letter_id>")
@require_admin
def get_dead_letter(letter_id: str) -> ResponseReturnValue:
    _, ledger, letters = _stores()
    letter = letters.get(letter_id)
    if letter is None:
        raise ProblemError(404, "dead-letter-not-found", f"No dead letter has id {letter_id!r}.")
    # The letter's ``attempts`` count is replaced by the full attempt history.
    return jsonify({**letter.to_dict(), "attempts": ledger.attempts(letter_id)})


@bp.post("/dead-letters/<unit_id:letter_id>/replay")
@require_admin
def replay_dead_letter(letter_id: str) -> ResponseReturnValue:
    force: bool = read_admin_body(_REPLAY, empty={"force": False})["force"]
    _, _, letters = _stores()
    rules = "" if force else rules_fingerprint_now(_ctx().settings.rules_file)
    result = letters.replay(letter_id, now=time.time(), actor="admin-api", rules_fingerprint=rules)
    if result is ReplayResult.NOT_FOUND:
        raise ProblemError(404, "dead-letter-not-found", f"No dead letter has id {letter_id!r}.")
    if result is ReplayResult.RULES_UNCHANGED:
        raise ProblemError(409, "rules-unchanged", rules_unchanged_message(letter_id))
    if result is not ReplayResult.REPLAYED:
        raise ProblemError(
            409, "dead-letter-not-waiting", f"Dead letter {letter_id!r} was already handled."
        )
    return jsonify(id=letter_id, result=result.value), 202


@bp.post("/dead-letters/replay")
@require_admin
def replay_dead_letters() -> ResponseReturnValue:
    body = read_admin_body(_BULK_REPLAY, empty=None)
    dry_run: bool = body["dry_run"]
    filters = _filters(body)
    _, _, letters = _stores()
    rules = "" if body["force"] else rules_fingerprint_now(_ctx().settings.rules_file)
    matched = list(letters.iter_waiting(**filters))
    now = time.time()
    replayed: list[str] = []
    unchanged: list[str] = []
    for letter in matched:
        at = now + len(replayed) / REPLAY_RATE_PER_SECOND
        result = letters.replay(
            letter.id,
            now=now,
            actor="admin-api",
            dry_run=dry_run,
            at=at,
            rules_fingerprint=rules,
        )
        if result in (ReplayResult.REPLAYED, ReplayResult.WOULD_REPLAY):
            replayed.append(letter.id)
        elif result is ReplayResult.RULES_UNCHANGED:
            unchanged.append(letter.id)
    return jsonify(
        dry_run=dry_run, matched=len(matched), replayed=replayed, rules_unchanged=unchanged
    )


@bp.delete("/dead-letters/<unit_id:letter_id>")
@require_admin
def discard_dead_letter(letter_id: str) -> ResponseReturnValue:
    reason: str = read_admin_body(_DISCARD, empty={}).get("reason", "")
    _, _, letters = _stores()
    if letters.get(letter_id) is None:
        raise ProblemError(404, "dead-letter-not-found", f"No dead letter has id {letter_id!r}.")
    if not letters.discard(letter_id, now=time.time(), actor="admin-api", reason=reason):
        raise ProblemError(
            409, "dead-letter-not-waiting", f"Dead letter {letter_id!r} was already handled."
        )
    return jsonify(id=letter_id, status="discarded")
