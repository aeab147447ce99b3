"""Stage 3 of the edge flow: validate a parsed event into a typed, frozen ``Event``.

The envelope (``id, type, created_at, account_id, data``) is the same for both sources and
refuses unknown fields. ``data`` is checked per (source, type):

* Coniq ``reward.issued``: ``customer``, ``subscription``, ``reward``. Coniq has not
  published its format, so unknown fields inside ``data`` are ignored (kept in the stored
  body) rather than refused, and only what fulfilment needs is required.
* Other Coniq types (``customer.*``, ``subscription.*``, ``offer.redeemed``,
  ``transaction.created``, ``points.updated``): any JSON object. Unknown Coniq types are
  refused.
* Internal ``reward.granted``: our own format, so it is strict: ``recipient``, a non-empty
  ``rewards`` list of ``{reward_code | provider + product, quantity}`` and ``reference``.
  Other internal types carry any JSON object.

``load_event`` raises ``marshmallow.ValidationError`` and nothing else for any JSON input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from tasks.routing import PROVIDERS

__all__ = [
    "CONIQ_TYPES",
    "MAX_EMAIL_CHARS",
    "MAX_UNITS_PER_EVENT",
    "ConiqReward",
    "Event",
    "RewardGranted",
    "RewardIssued",
    "RewardLine",
    "load_event",
    "SOURCES",
]

SOURCES = ("coniq", "internal")
# Units one event may ask for (sum of quantities): a bigger batch is a mistake or abuse.
MAX_UNITS_PER_EVENT = 100
# Units one reward line may ask for.
MAX_QUANTITY = 100
# Longest free-text field we accept (names, codes, references).
MAX_TEXT_CHARS = 200
# Longest email address: RFC 5321's path limit (256) less its angle brackets.
MAX_EMAIL_CHARS = 254
# Coniq types with a fixed name; customer.* and subscription.* are matched by pattern.
CONIQ_TYPES = ("reward.issued", "offer.redeemed", "transaction.created", "points.updated")
_CONIQ_FAMILIES = re.compile(r"(customer|subscription)\.[a-z][a-z0-9_]{0,39}\Z")
_TYPE = re.compile(r"[a-z][a-z0-9_]{0,39}(\.[a-z][a-z0-9_]{0,39}){1,3}\Z")
# Same alphabet as webhook-id (worker.signing._ID): the two must be equal.
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,200}\Z")
_PRODUCT = re.compile(r"[0-9]{1,18}/[\x21-\x7e]{1,100}\Z")


# --- typed results ------------------------------------------------------------------


@dataclass(frozen=True)
class ConiqReward:
    id: str
    offer_id: str
    name: str | None = None
    expiry_date: str | None = None


@dataclass(frozen=True)
class RewardIssued:
    """Coniq ``reward.issued`` data (customer and subscription kept as validated dicts)."""

    customer: Mapping[str, Any]
    subscription: Mapping[str, Any] | None
    reward: ConiqReward


@dataclass(frozen=True)
class RewardLine:
    """One line of an internal ``reward.granted``: a code, or an explicit product."""

    quantity: int
    reward_code: str | None = None
    provider: str | None = None
    product: str | None = None

    def match(self) -> dict[str, str]:
        if self.reward_code is not None:
            return {"reward_code": self.reward_code}
        return {"provider": self.provider or "", "product": self.product or ""}


@dataclass(frozen=True)
class RewardGranted:
    recipient: Mapping[str, Any]
    rewards: tuple[RewardLine, ...]
    reference: str


@dataclass(frozen=True)
class Event:
    """A validated envelope; ``data`` is typed for the types we fulfil, else a dict."""

    id: str
    type: str
    created_at: datetime
    account_id: str
    data: RewardIssued | RewardGranted | Mapping[str, Any]


# --- fields -------------------------------------------------------------------------


class IdField(fields.Field[str]):
    """An identifier sent as a non-blank string or an integer; loaded as a string."""

    default_error_messages = {
        "invalid": "Must be a non-empty string or an integer.",
        "too_long": f"Must be at most {MAX_TEXT_CHARS} characters.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.make_error("invalid")
        text = str(value) if isinstance(value, str) else format(value, "d")
        if not text.strip():
            raise self.make_error("invalid")
        if len(text) > MAX_TEXT_CHARS:
            raise self.make_error("too_long")
        return text


def _iso_date(value: str) -> None:
    """Coniq's expiry format is unpublished: accept an ISO 8601 date or date-time."""
    try:
        date.fromisoformat(value)
    except ValueError:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError("Must be an ISO 8601 date or date-time.") from None


def _text(*, required: bool = True, allow_none: bool = False) -> fields.String:
    return fields.String(
        required=required,
        allow_none=allow_none,
        validate=validate.Length(min=0 if allow_none else 1, max=MAX_TEXT_CHARS),
    )


def _email() -> fields.Email:
    return fields.Email(required=True, validate=validate.Length(max=MAX_EMAIL_CHARS))


def _address(value: Any) -> None:
    if not isinstance(value, str | dict):
        raise ValidationError("Must be a string or an object.")


# --- Coniq --------------------------------------------------------------------------


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


class ConiqCustomerSchema(_Lenient):
    id = IdField(required=True)
    email = _email()
    first_name = _text(required=False, allow_none=True)
    last_name = _text(required=False, allow_none=True)


class ConiqSubscriptionSchema(_Lenient):
    id = IdField(required=True)
    program_id = IdField(required=False, allow_none=True)


class ConiqRewardSchema(_Lenient):
    id = IdField(required=True)
    offer_id = IdField(required=True)
    name = _text(required=False, allow_none=True)
    expiry_date = fields.String(required=False, allow_none=True, validate=_iso_date)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ConiqReward:
        return ConiqReward(**data)


class RewardIssuedSchema(_Lenient):
    customer = fields.Nested(ConiqCustomerSchema, required=True)
    subscription = fields.Nested(ConiqSubscriptionSchema, required=False, allow_none=True)
    reward = fields.Nested(ConiqRewardSchema, required=True)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> RewardIssued:
        return RewardIssued(
            customer=data["customer"],
            subscription=data.get("subscription"),
            reward=data["reward"],
        )


# --- internal -----------------------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class RecipientSchema(_Strict):
    email = _email()
    first_name = _text()
    last_name = _text()
    # Shape unspecified by the contract: a one-line string or a structured object.
    address = fields.Raw(required=False, allow_none=True, validate=_address)


class RewardLineSchema(_Strict):
    reward_code = _text(required=False)
    provider = fields.String(required=False, validate=validate.OneOf(PROVIDERS))
    product = fields.String(
        required=False,
        validate=validate.Regexp(_PRODUCT, error="Must be '<numeric id>/<sku or token>'."),
    )
    quantity = fields.Integer(
        strict=True, load_default=1, validate=validate.Range(min=1, max=MAX_QUANTITY)
    )

    @validates_schema
    def _code_or_product(self, data: dict[str, Any], **_: Any) -> None:
        has_code = "reward_code" in data
        has_provider, has_product = "provider" in data, "product" in data
        if has_code and (has_provider or has_product):
            raise ValidationError(
                "Give either reward_code or provider + product, not both.", "reward_code"
            )
        if not has_code and not (has_provider and has_product):
            missing = "provider" if not has_provider else "product"
            if not has_provider and not has_product:
                missing = "reward_code"
            raise ValidationError("Give reward_code, or provider and product.", missing)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> RewardLine:
        return RewardLine(**data)


class RewardGrantedSchema(_Strict):
    recipient = fields.Nested(RecipientSchema, required=True)
    rewards = fields.List(
        fields.Nested(RewardLineSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_UNITS_PER_EVENT),
    )
    reference = _text()

    @validates_schema
    def _unit_cap(self, data: dict[str, Any], **_: Any) -> None:
        total = sum(line.quantity for line in data["rewards"])
        if total > MAX_UNITS_PER_EVENT:
            raise ValidationError(
                f"At most {MAX_UNITS_PER_EVENT} units per event (sum of quantities), got {total}.",
                "rewards",
            )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> RewardGranted:
        return RewardGranted(
            recipient=data["recipient"],
            rewards=tuple(data["rewards"]),
            reference=data["reference"],
        )


# --- envelope -----------------------------------------------------------------------


class EnvelopeSchema(_Strict):
    id = fields.String(
        required=True,
        validate=validate.Regexp(_EVENT_ID, error="Must be 1-200 printable ASCII characters."),
    )
    type = fields.String(
        required=True,
        validate=validate.Regexp(_TYPE, error="Must be a dotted lower-case event type."),
    )
    created_at = fields.DateTime(required=True)
    account_id = _text()
    # JSON object keys are always strings: no key field, which would re-check each one.
    data = fields.Dict(required=True)


# Built once: a Schema's construction deep-copies its declared fields, which cost more than
# the validation itself when done per request. Loading does not mutate the instances.
_ENVELOPE = EnvelopeSchema()
_REWARD_ISSUED = RewardIssuedSchema()
_REWARD_GRANTED = RewardGrantedSchema()


def _data_schema(source: str, event_type: str) -> Schema | None:
    """The schema for ``data``, None for free-form; ValidationError for unknown types."""
    if source == "coniq":
        if event_type == "reward.issued":
            return _REWARD_ISSUED
        if event_type in CONIQ_TYPES or _CONIQ_FAMILIES.match(event_type):
            return None
        raise ValidationError({"type": [f"Unknown Coniq event type {event_type!r}."]})
    if event_type == "reward.granted":
        return _REWARD_GRANTED
    return None


def load_event(source: str, document: Any) -> Event:
    """Validate a parsed JSON document as an event from ``source``.

    Raises:
        ValidationError: ``messages`` maps each failing field (``data`` nested) to messages.
        ValueError: ``source`` is not one of ``SOURCES`` (programming error).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    envelope: dict[str, Any] = _ENVELOPE.load(document)
    schema = _data_schema(source, envelope["type"])
    data: RewardIssued | RewardGranted | Mapping[str, Any] = envelope["data"]
    if schema is not None:
        try:
            data = schema.load(envelope["data"])
        except ValidationError as exc:
            raise ValidationError({"data": exc.messages}) from exc
    return Event(
        id=envelope["id"],
        type=envelope["type"],
        created_at=envelope["created_at"],
        account_id=envelope["account_id"],
        data=data,
    )
