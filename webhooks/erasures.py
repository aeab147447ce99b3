"""Admin API: erase one customer's personal data, behind ``ADMIN_TOKEN``.

    POST /erasures  {"email": ...} | {"customer_id": ...}
        200  counts of what was erased, by record kind (the subject as its keyed hash)
        409  some of the customer's units are still in flight: named, nothing erased
        422  neither or both of email / customer_id, or not a usable value

The address travels in the request body only (never the URL, so no access log holds it),
and no log line, answer or audit entry repeats it: they name the customer by the keyed
hash (``worker.stores.personal_data``). The work is ``worker.stores.erasure.Erasure``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from tasks.bookkeeping import side_records
from webhooks.admin import require_admin
from webhooks.context import edge_context
from webhooks.errors import ProblemError
from worker.stores.erasure import COUNTED, Erasure, InFlightError
from worker.stores.personal_data import SubjectKind, hasher_for

__all__ = ["bp", "MAX_SUBJECT_CHARS"]

log = logging.getLogger(__name__)
bp = Blueprint("erasures", __name__)
MAX_SUBJECT_CHARS = 320  # the longest email address RFC 5321 allows


@bp.post("/erasures")
@require_admin
def create_erasure() -> ResponseReturnValue:
    kind, value = _subject(request.get_json(silent=True))
    ctx = edge_context()
    erasure = Erasure(ctx.redis, ctx.keys, hasher_for(ctx.settings), side_records(ctx.keys))
    try:
        report = erasure.erase(kind, value, actor="admin-api", now=time.time())
    except InFlightError as exc:
        log.warning("erasure refused: %d unit(s) in flight", len(exc.units))
        raise ProblemError(
            409,
            "units-in-flight",
            "Some of the customer's units are still being fulfilled; retry the erasure"
            " once they are finished (fulfilled, dead-lettered or ignored).",
            errors={"units": exc.units},
        ) from None
    except redis.RedisError as exc:
        log.warning("erasure: store unavailable (%s)", type(exc).__name__)
        raise ProblemError(
            503, "store-unavailable", "The store is unavailable; retry the erasure later."
        ) from None
    log.info("erasure %s done: %s", report.subject[:12], report.counts)
    return jsonify(report.to_dict())


def _subject(body: Any) -> tuple[SubjectKind, str]:
    """The one subject named by the body.

    Raises:
        ProblemError: 400 not a JSON object; 422 neither or both fields, or a bad value.
    """
    if not isinstance(body, dict):
        raise ProblemError(400, "invalid-body", 'The body must be a JSON object: {"email": ...}.')
    given = [kind for kind in SubjectKind if kind.value in body]
    unknown = sorted(set(body) - {kind.value for kind in SubjectKind})
    if len(given) != 1 or unknown:
        raise ProblemError(
            422,
            "validation-failed",
            "Give exactly one of email or customer_id.",
            errors={name: ["unknown field"] for name in unknown}
            or {"email": ["give exactly one of email or customer_id"]},
        )
    kind = given[0]
    raw = body[kind.value]
    if kind is SubjectKind.CUSTOMER_ID and isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    problem = _value_problem(kind, raw)
    if problem:
        raise ProblemError(
            422, "validation-failed", f"{kind.value} {problem}.", errors={kind.value: [problem]}
        )
    return kind, str(raw)


def _value_problem(kind: SubjectKind, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        return "must be a non-empty string"
    if len(raw) > MAX_SUBJECT_CHARS:
        return f"must be at most {MAX_SUBJECT_CHARS} characters"
    if kind is SubjectKind.EMAIL and "@" not in raw:
        return "must be an email address"
    return ""


def _describe() -> None:
    """Add ``POST /erasures`` to ``/openapi.json``."""
    from webhooks import openapi

    counts = {name: {"type": "integer"} for name in COUNTED}
    openapi.SCHEMAS.update(
        {
            "Erasure": {
                "type": "object",
                "description": "What one erasure changed, by record kind. The customer is"
                " named by the keyed hash of their address, never in clear.",
                "properties": {
                    "subject": {"type": "string", "description": "HMAC-SHA256 (128 bits, hex)"},
                    "kind": {"type": "string", "enum": [k.value for k in SubjectKind]},
                    "at": {"type": "number"},
                    **counts,
                },
            }
        }
    )
    openapi.PATHS.update(
        {
            "/erasures": {
                "post": {
                    "summary": "Erase one customer's personal data (events, units, attempts,"
                    " dead letters, source progress, the Coniq loop-back queue); ids, states"
                    " and provider references stay for audit and dedupe.",
                    "tags": ["admin"],
                    "security": [{"adminToken": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "description": "Exactly one of email or customer_id"
                                    " (Coniq's customer id).",
                                    "properties": {
                                        "email": {
                                            "type": "string",
                                            "maxLength": MAX_SUBJECT_CHARS,
                                        },
                                        "customer_id": {
                                            "oneOf": [
                                                {
                                                    "type": "string",
                                                    "maxLength": MAX_SUBJECT_CHARS,
                                                },
                                                {"type": "integer"},
                                            ]
                                        },
                                    },
                                    "additionalProperties": False,
                                    "minProperties": 1,
                                    "maxProperties": 1,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": openapi.json_response("What was erased.", openapi.ref("Erasure")),
                        "400": openapi.problem_response("Not a JSON object.", "invalid-body"),
                        "401": openapi.problem_response(
                            "Missing or wrong admin token.", "unauthorized"
                        ),
                        "409": openapi.problem_response(
                            "Units still in flight (named in errors.units); nothing erased.",
                            "units-in-flight",
                        ),
                        "422": openapi.problem_response("Bad subject.", "validation-failed"),
                        "503": openapi.problem_response("Store down.", "store-unavailable"),
                    },
                }
            }
        }
    )


_describe()
