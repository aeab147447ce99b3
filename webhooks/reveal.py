"""Admin API: reveal a unit's full reward codes, an explicit and audited action.

    POST /fulfillments/{event id}/units/{unit id}/reveal   {"actor": ..., "reason": ...}

Every other view shows codes masked. Revealing one unit's codes (a member says the email
never arrived, support reads the code out) needs the admin token, a named actor and a
reason, and is recorded in the ledger's reveal log (unit, actor, reason, time, client
address) before the sealed codes are read, so there is no reveal without its audit entry.
The answer is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import RAISE, Schema, fields, validate

from webhooks.admin import require_admin
from webhooks.errors import ProblemError
from webhooks.jsonbody import read_admin_body
from worker.stores.crypto import CodeKeyError, CodeVault
from worker.stores.ledger import Ledger

__all__ = ["bp", "MAX_ACTOR_CHARS", "MAX_REASON_CHARS"]

bp = Blueprint("reveal", __name__)
log = logging.getLogger(__name__)
MAX_ACTOR_CHARS, MAX_REASON_CHARS = 100, 500
RETRY_AFTER_SECONDS = 1
_UNIT_SUFFIX = re.compile(r":[0-9]+:[0-9]+")  # a unit id is ``{event id}:{line}:{index}``


class RevealSchema(Schema):
    """Who asks and why: both required, kept in the reveal log."""

    class Meta:
        unknown = RAISE

    actor = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ACTOR_CHARS))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=MAX_REASON_CHARS))


_REVEAL = RevealSchema()


# Any unit path is this route's (a non-unit id is its 404, not the GET route's 405).
@bp.post("/fulfillments/<path:event_id>/units/<path:unit_id>/reveal")
@require_admin
def reveal_codes(event_id: str, unit_id: str) -> ResponseReturnValue:
    ctx: Any = current_app.extensions["rewardrelay"]
    asked = read_admin_body(_REVEAL, empty=None)
    actor, reason = asked["actor"].strip(), asked["reason"].strip()
    if not (
        unit_id.startswith(event_id + ":") and _UNIT_SUFFIX.fullmatch(unit_id[len(event_id) :])
    ):
        raise ProblemError(404, "unit-not-found", f"Event {event_id!r} has no unit {unit_id!r}.")
    if not ctx.settings.code_keys:
        raise ProblemError(
            503, "codes-unavailable", "CODE_KEYS is not set on this process: no code can be read."
        )
    ledger = Ledger(ctx.redis, ctx.keys, CodeVault(ctx.settings.code_keys))
    who = f"{actor} (admin-api from {request.remote_addr or 'unknown'})"
    try:
        revealed = ledger.reveal(unit_id, actor=who, reason=reason, now=time.time())
    except CodeKeyError:
        raise ProblemError(
            409,
            "codes-unreadable",
            "None of CODE_KEYS opens this unit's codes: add the key they were sealed with.",
        ) from None
    except redis.RedisError:
        raise ProblemError(
            503,
            "store-unavailable",
            "The store is unreachable; nothing was revealed.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    if revealed is None:
        raise ProblemError(404, "codes-not-found", f"Unit {unit_id!r} has no issued codes.")
    log.warning("reward codes revealed", extra={"unit_id": unit_id, "actor": actor})
    response = jsonify(unit_id=unit_id, codes=list(revealed.codes), links=list(revealed.links))
    response.headers["Cache-Control"] = "no-store"
    return response
