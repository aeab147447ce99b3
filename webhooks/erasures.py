"""Admin API: erase one customer's personal data, behind ``ADMIN_TOKEN``.

    POST /erasures  {"email": ...} | {"customer_id": ...}
        200  counts of what was erased, by record kind (the subject as its keyed hash)
        409  some of the customer's units are still in flight: named, nothing erased
        422  neither or both of email / customer_id, or not a usable value
        (the body is read by ``jsonbody.read_admin_body``: 400 / 415 as for every
        admin body)

The address travels in the request body only (never the URL, so no access log holds it),
and no log line, answer or audit entry repeats it: they name the customer by the keyed
hash (``worker.stores.personal_data``). The work is ``worker.stores.erasure.Erasure``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from tasks.bookkeeping import side_records
from webhooks.admin import require_admin
from webhooks.context import edge_context
from webhooks.errors import ProblemError
from webhooks.jsonbody import read_admin_body
from webhooks.schemas import MAX_EMAIL_CHARS, MAX_TEXT_CHARS
from worker.stores.erasure import Erasure, InFlightError
from worker.stores.personal_data import SubjectKind, hasher_for

__all__ = ["ErasureSchema", "bp"]

log = logging.getLogger(__name__)
bp = Blueprint("erasures", __name__)


class CustomerIdField(fields.Field[str]):
    """Coniq's customer id: a non-blank string or an integer, loaded as a string."""

    default_error_messages = {"invalid": "Must be a non-empty string or an integer."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.make_error("invalid")
        text = str(value)
        if not text.strip():
            raise self.make_error("invalid")
        return text


class ErasureSchema(Schema):
    """``POST /erasures``: exactly one of ``email`` or ``customer_id``."""

    class Meta:
        unknown = RAISE

    email = fields.Email(validate=validate.Length(max=MAX_EMAIL_CHARS))
    customer_id = CustomerIdField(validate=validate.Length(max=MAX_TEXT_CHARS))

    @validates_schema
    def _exactly_one(self, data: dict[str, Any], **_: Any) -> None:
        if len(data) != 1:
            raise ValidationError("Give exactly one of email or customer_id.", "email")


_ERASURE = ErasureSchema()


@bp.post("/erasures")
@require_admin
def create_erasure() -> ResponseReturnValue:
    body = read_admin_body(_ERASURE, empty=None)
    kind = SubjectKind.EMAIL if "email" in body else SubjectKind.CUSTOMER_ID
    value = str(body[kind.value])
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
