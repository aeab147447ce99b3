"""Sandboxes, Ifeelgoods: a local simulator of the Fulfillment API v2 (providers.md section 1).

Stage: test infrastructure shipped with the package, so ``rewardrelay`` can run end to end
without vendor credentials and so the worker's retry paths can be tested against a real HTTP
server. It implements the vendor-documented behaviour (``data``/``version`` envelope,
``paging``, ``{error_name, error_message}`` errors, ``order_id`` idempotency with 201 then
200) and the parts providers.md tags [DESIGN] (integer ``version`` on every redemption,
``If-Match`` on actions, ``user_mismatch``/``conflict_uniqueness`` on replays). Required
by the vendor and refused when missing: the credentials (401 ``unauthorized``), an
``Accept`` that allows JSON or PDF (1.1, 406 ``not_acceptable``), the ``data`` wrapper,
``data.order_id`` (422 ``invalid_request``) and ``data.user`` (422 ``invalid_user``).
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify, request

from sandboxes.base import (
    CONTROL_PREFIX,
    Endpoint,
    SandboxState,
    accepts,
    current_fault,
    install,
    register_endpoints,
)
from sandboxes.faults import FaultKind

__all__ = ["ENDPOINTS", "IfeelgoodsApi", "IfeelgoodsState", "create_app"]

API_PREFIX = "/fulfillment/v2"
TOKEN_TTL_SECONDS = 7200  # providers.md 1.2: expires_in 7200 in the blueprint example
DEFAULT_PER_PAGE = 20  # providers.md 1.4 [DESIGN]
MAX_PER_PAGE = 100  # keeps a careless list call cheap
_ID_ALPHABET = string.ascii_uppercase + string.digits
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O/1/I, like printed gift cards
# providers.md 1.1: JSON (``; pretty=true`` too) or a redemption rendered as a PDF e-card.
ACCEPTED_MEDIA_TYPES = ("application/json", "application/pdf")

# providers.md 1.5 [SEED 003] messages, plus our own names for 429/5xx [DESIGN].
ERROR_MESSAGES: dict[str, str] = {
    "bad_request": "The request is malformed and cannot be understood.",
    "conflict": "The resource has already been modified, please reload before submitting again.",
    "conflict_uniqueness": "The resource does not satisfy a uniqueness constraint.",
    "forbidden": "You are not allowed to perform this action.",
    "invalid_request": (
        "The request is not valid and cannot be processed, please check parameter "
        "requirements and format in the documentation."
    ),
    "invalid_user": "The user provided to perform the redemption is not valid.",
    "not_acceptable": "The media type specified by the Accept header is not acceptable.",
    "not_found": "The resource or action does not exist.",
    "operation_refused": "This operation is not allowed.",
    "precondition_failed": (
        "Version specified in If-Match header does not match with database one. "
        "Please reload the resource."
    ),
    "unauthorized": "You need to be signed-in to perform this action.",
    "user_mismatch": (
        "The user provided to perform the redemption does not match the user associated "
        "to the redemption."
    ),
    "too_many_requests": "You sent too many requests in a given amount of time.",
    "internal_error": "An unexpected error has happened.",
}
_DEFAULT_NAME_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    422: "invalid_request",
    429: "too_many_requests",
}


@dataclass
class RewardSpec:
    sku: str
    name: str
    code_name: str = "Gift Card Number"


@dataclass
class PromotionSpec:
    id: int
    name: str
    rewards: dict[str, RewardSpec]


@dataclass
class RedemptionRecord:
    id: str
    promotion_id: int
    order_id: str
    state: str
    version: int
    reward_sku: str | None
    user: dict[str, Any] | None
    created: str
    updated: str
    redeemed: str | None = None
    codes: list[dict[str, str]] = field(default_factory=list)


def default_catalogue() -> dict[int, PromotionSpec]:
    """Two promotions with a few reward SKUs (the SKU names follow providers.md 1.6)."""
    rewards = [
        RewardSpec("APP-ITU-10USD-US", "iTunes US $10"),
        RewardSpec("AMZ-25USD-US", "Amazon.com $25"),
        RewardSpec("STB-5USD-US", "Starbucks $5", code_name="eGift Code"),
    ]
    return {
        1: PromotionSpec(1, "Sandbox promotion", {r.sku: r for r in rewards}),
        2: PromotionSpec(2, "Sandbox promotion (Amazon only)", {rewards[1].sku: rewards[1]}),
    }


class IfeelgoodsState(SandboxState):
    """Promotions, redemptions (by id and by order id) and bearer tokens, all in memory."""

    def __init__(self, *, seed: int | None = 0) -> None:
        super().__init__(seed=seed)
        self.promotions = default_catalogue()
        self.redemptions: dict[str, RedemptionRecord] = {}
        self.by_order: dict[tuple[int, str], str] = {}

    def _reset_data(self) -> None:
        self.redemptions.clear()
        self.by_order.clear()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_redemption_id() -> str:
    part = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
    return f"{part[:5]}-{part[5:]}"


def _new_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(16))


def _error(status: int, name: str | None = None, message: str | None = None) -> Response:
    error_name = name or _DEFAULT_NAME_BY_STATUS.get(status, "internal_error")
    body = {
        "error_name": error_name,
        "error_message": message or ERROR_MESSAGES.get(error_name, "Error."),
    }
    response = jsonify(body)
    response.status_code = status
    return response


def _parse_if_match(value: str | None) -> int | None:
    """Accept ``42``, ``"42"`` and ``W/"42"`` (providers.md 1.8 [DESIGN]); None if absent."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise ValueError("If-Match must be an integer version")
    return int(text)


def create_app(
    state: IfeelgoodsState | None = None,
    *,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> Flask:
    """Build the Ifeelgoods sandbox.

    Credentials default to ``IFEELGOODS_API_KEY``/``IFEELGOODS_API_SECRET`` from the
    environment, else ``sandbox-key``/``sandbox-secret``. The state is exposed as
    ``app.extensions["sandbox_state"]``.
    """
    key = api_key or os.environ.get("IFEELGOODS_API_KEY") or "sandbox-key"
    secret = api_secret or os.environ.get("IFEELGOODS_API_SECRET") or "sandbox-secret"
    st = state if state is not None else IfeelgoodsState()
    app = Flask("sandboxes.ifeelgoods")
    app.extensions["sandbox_state"] = st
    install(app, st, _error)
    api = IfeelgoodsApi(st, key, secret)
    app.register_error_handler(404, api.not_found)
    app.register_error_handler(405, api.not_found)
    app.before_request(api.negotiate)
    app.before_request(api.authenticate)
    register_endpoints(app, api, ENDPOINTS)
    return app


class IfeelgoodsApi:
    """The sandbox's request handlers, one method per endpoint of :data:`ENDPOINTS`."""

    def __init__(self, state: IfeelgoodsState, api_key: str, api_secret: str) -> None:
        self.st = state
        self._key = api_key
        self._secret = api_secret

    def not_found(self, _exc: Exception) -> Response:
        return _error(404)

    def negotiate(self) -> Response | None:
        """providers.md 1.1 [SEED 003; PUB S2]: JSON (or a PDF e-card) only; an ``Accept``
        that allows neither is 406 ``not_acceptable``."""
        if request.path.startswith(CONTROL_PREFIX):
            return None
        if accepts(request.headers.get("Accept"), ACCEPTED_MEDIA_TYPES):
            return None
        return _error(406)

    def authenticate(self) -> Response | None:
        """providers.md 1.2 [SEED 003]: ``Api-Key`` + ``Api-Secret`` headers, or a Bearer."""
        if not request.path.startswith(API_PREFIX):
            return None
        header_key = request.headers.get("Api-Key")
        header_secret = request.headers.get("Api-Secret")
        if header_key is not None or header_secret is not None:
            ok = secrets.compare_digest(header_key or "", self._key) and secrets.compare_digest(
                header_secret or "", self._secret
            )
            return None if ok else _error(401)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.st.token_status(token.strip()) == "valid":
            return None
        return _error(401)

    def token(self) -> tuple[Response, int] | Response:
        """providers.md 1.2 [PUB S1 apiary]: client_id/client_secret, grant account_application."""
        body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        body = body if isinstance(body, dict) else {}
        ok = (
            secrets.compare_digest(str(body.get("client_id", "")), self._key)
            and secrets.compare_digest(str(body.get("client_secret", "")), self._secret)
            and body.get("grant_type") == "account_application"
        )
        if not ok:
            return jsonify(
                {
                    "error": "invalid_client",
                    "error_description": (
                        "Client authentication failed due to unknown client, no client "
                        "authentication included, or unsupported authentication method."
                    ),
                }
            ), 401
        token, _created = self.st.mint_token(TOKEN_TTL_SECONDS)
        return jsonify(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": TOKEN_TTL_SECONDS,
                "refresh_token": None,
                "scope": "",
            }
        )

    def account(self) -> Response:
        return jsonify({"data": dict(SANDBOX_ACCOUNT)})

    def promotion(self, promotion_id: int) -> Response:
        promo = self.st.promotions.get(promotion_id)
        if promo is None:
            return _error(404)
        return jsonify({"data": _promotion_json(promo)})

    def create_or_find(self, promotion_id: int) -> tuple[Response, int] | Response:
        """providers.md 1.6: create (201, state pending) or find (200) by order_id."""
        promo = self.st.promotions.get(promotion_id)
        if promo is None:
            return _error(404)
        data = _data_body()
        if data is None or not isinstance(data.get("order_id"), str) or not data["order_id"]:
            return _error(422, "invalid_request", "data.order_id is required.")
        user = data.get("user")
        if user is not None and not _valid_user(user):
            return _error(422, "invalid_user")
        reward = data.get("reward")
        sku = reward.get("sku") if isinstance(reward, dict) else None
        if sku is not None and sku not in promo.rewards:
            return _error(404, "not_found", "Unknown reward sku for this promotion.")
        order_id: str = data["order_id"]
        with self.st.lock:
            existing = self.st.by_order.get((promotion_id, order_id))
            if existing is not None:
                return _single(self.st.redemptions[existing], 200)
            record = self._new_record(promotion_id, order_id, sku, user, version=1)
            return _single(record, 201)

    def create_and_redeem(self, promotion_id: int, sku: str) -> tuple[Response, int] | Response:
        """providers.md 1.9 [PUB S3]: 201 first, 200 on replay with same order_id and user.

        An ``order_id`` whose redemption exists but is not redeemed (created with the
        two-call flow, or booked) is handed back as it is, 200: "the same redemption, no
        new charge" (1.9). Whether the vendor would redeem it instead is not documented
        [DESIGN]; a client must then redeem it itself, with If-Match.
        """
        promo = self.st.promotions.get(promotion_id)
        if promo is None or sku not in promo.rewards:
            return _error(404)
        data = _data_body()
        if data is None or not isinstance(data.get("order_id"), str) or not data["order_id"]:
            return _error(422, "invalid_request", "data.order_id is required.")
        if not _valid_user(data.get("user")):
            return _error(422, "invalid_user")
        user: dict[str, Any] = data["user"]
        order_id: str = data["order_id"]
        with self.st.lock:
            existing_id = self.st.by_order.get((promotion_id, order_id))
            if existing_id is not None:
                return _replay(self.st.redemptions[existing_id], user, sku)
            # version 0: redeem_record bumps it to 1, created and redeemed in one change
            record = self._new_record(promotion_id, order_id, sku, user, version=0)
            self._redeem_record(record, sku)
            return _single(record, 201)

    def _new_record(
        self,
        promotion_id: int,
        order_id: str,
        sku: str | None,
        user: dict[str, Any] | None,
        *,
        version: int,
    ) -> RedemptionRecord:
        """Store a new pending redemption under its order id (caller holds the lock)."""
        now = _now()
        record = RedemptionRecord(
            id=_new_redemption_id(),
            promotion_id=promotion_id,
            order_id=order_id,
            state="pending",
            version=version,
            reward_sku=sku,
            user=dict(user) if user else None,
            created=now,
            updated=now,
        )
        self.st.redemptions[record.id] = record
        self.st.by_order[(promotion_id, order_id)] = record.id
        self.st.record_issue(order_id)
        return record

    def _redeem_record(self, record: RedemptionRecord, sku: str) -> None:
        reward = self.st.promotions[record.promotion_id].rewards[sku]
        record.reward_sku = sku
        record.state = "redeemed"
        record.version += 1
        record.updated = record.redeemed = _now()
        record.codes = [
            {"name": reward.code_name, "value": _new_code(), "format": "string", "usage": "primary"}
        ]

    def list_redemptions(self, promotion_id: int) -> Response:
        """providers.md 1.6 filters; 1.3/1.4 ``paging`` with page/per_page [DESIGN]."""
        if promotion_id not in self.st.promotions:
            return _error(404)
        try:
            page = max(1, int(request.args.get("page", "1")))
            per_page = min(
                MAX_PER_PAGE, max(1, int(request.args.get("per_page", DEFAULT_PER_PAGE)))
            )
        except ValueError:
            return _error(400, "bad_request", "page and per_page must be integers.")
        filters = {
            "order_id": request.args.get("order_id"),
            "state": request.args.get("state"),
            "reward_sku": request.args.get("reward_sku"),
        }
        email = request.args.get("user_email")
        with self.st.lock:
            rows = [
                r
                for r in self.st.redemptions.values()
                if r.promotion_id == promotion_id
                and all(v is None or getattr(r, k) == v for k, v in filters.items())
                and (email is None or (r.user or {}).get("email", "").lower() == email.lower())
            ]
            start = (page - 1) * per_page
            data = [_redemption_json(r) for r in rows[start : start + per_page]]
        return jsonify(
            {"data": data, "paging": {"page": page, "per_page": per_page, "total": len(rows)}}
        )

    def get_redemption(self, redemption_id: str) -> tuple[Response, int] | Response:
        with self.st.lock:
            record = self.st.redemptions.get(redemption_id)
            if record is None:
                return _error(404)
            return _single(record)

    def redeem(self, redemption_id: str) -> tuple[Response, int] | Response:
        """providers.md 1.6 redeem action; If-Match per 1.8 [DESIGN]."""
        data = _data_body()
        if data is None or not _valid_user(data.get("user")):
            return _error(422, "invalid_user")
        user: dict[str, Any] = data["user"]
        reward = data.get("reward")
        with self.st.lock:
            record = self.st.redemptions.get(redemption_id)
            if record is None:
                return _error(404)
            refused = _check_if_match(record)
            if refused is not None:
                return refused
            if not _same_user(record, user):
                return _error(409, "user_mismatch")
            if record.state == "redeemed":
                return _single(record)
            if record.state != "pending":
                return _error(422, "operation_refused")
            sku = reward.get("sku") if isinstance(reward, dict) else record.reward_sku
            if sku is None or sku not in self.st.promotions[record.promotion_id].rewards:
                return _error(422, "invalid_request", "A valid reward sku is required.")
            record.user = record.user or dict(user)
            self._redeem_record(record, sku)
            return _single(record)

    def cancel(self, redemption_id: str) -> tuple[Response, int] | Response:
        """providers.md 1.7: booked/pending can be canceled; redeemed is terminal."""
        with self.st.lock:
            record = self.st.redemptions.get(redemption_id)
            if record is None:
                return _error(404)
            refused = _check_if_match(record)
            if refused is not None:
                return refused
            if record.state == "canceled":
                return _single(record)
            if record.state not in ("pending", "booked"):
                return _error(422, "operation_refused")
            record.state = "canceled"
            record.version += 1
            record.updated = _now()
            return _single(record)


_PROMOTION = f"{API_PREFIX}/promotions/<int:promotion_id>"
ENDPOINTS = (
    Endpoint("POST", "/oauth/token", "token"),
    Endpoint("GET", f"{API_PREFIX}/accounts/me", "account"),
    Endpoint("GET", _PROMOTION, "promotion"),
    Endpoint("POST", f"{_PROMOTION}/redemptions", "create_or_find"),
    Endpoint("POST", f"{_PROMOTION}/rewards/<sku>/redemptions/actions/redeem", "create_and_redeem"),
    Endpoint("GET", f"{_PROMOTION}/redemptions", "list_redemptions"),
    Endpoint("GET", f"{API_PREFIX}/redemptions/<redemption_id>", "get_redemption"),
    Endpoint("POST", f"{API_PREFIX}/redemptions/<redemption_id>/actions/redeem", "redeem"),
    Endpoint("POST", f"{API_PREFIX}/redemptions/<redemption_id>/actions/cancel", "cancel"),
)

SANDBOX_ACCOUNT: dict[str, Any] = {
    "id": 1,
    "login": "sandbox",
    "name": "rewardrelay sandbox",
    "email": "sandbox@example.invalid",
    "phone_number": None,
    "roles": ["api"],
    "timezone": "UTC",
    "locale": "en",
    "access_type": "api",
}


def _single(record: RedemptionRecord, status: int = 200) -> tuple[Response, int]:
    return jsonify({"data": _redemption_json(record), "version": record.version}), status


def _data_body() -> dict[str, Any] | None:
    """providers.md 1.3: request payloads are wrapped in ``data``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        return None
    data: dict[str, Any] = body["data"]
    return data


def _valid_user(user: Any) -> bool:
    return isinstance(user, dict) and isinstance(user.get("email"), str) and "@" in user["email"]


def _same_user(record: RedemptionRecord, user: dict[str, Any] | None) -> bool:
    if record.user is None or user is None:
        return True
    return str(record.user.get("email", "")).lower() == str(user.get("email", "")).lower()


def _replay(record: RedemptionRecord, user: dict[str, Any], sku: str) -> tuple[Response, int]:
    """A create-and-redeem for an order id seen before (providers.md 1.9)."""
    if not _same_user(record, user):
        return _error(409, "user_mismatch"), 409
    if record.reward_sku is not None and record.reward_sku != sku:
        return _error(409, "conflict_uniqueness"), 409
    if record.state not in ("redeemed", "pending", "booked"):
        return _error(422, "operation_refused"), 422
    return _single(record, 200)


def _check_if_match(record: RedemptionRecord) -> Response | None:
    """providers.md 1.8 [DESIGN]: a stale If-Match is 412 (a race fault bumps first)."""
    fault = current_fault()
    if fault is not None and fault.kind is FaultKind.PRECONDITION_RACE:
        record.version += fault.bumps  # another writer got there first
    try:
        expected = _parse_if_match(request.headers.get("If-Match"))
    except ValueError:
        return _error(400, "bad_request", "If-Match must be an integer version.")
    if expected is not None and expected != record.version:
        return _error(412)
    return None


def _promotion_json(promo: PromotionSpec) -> dict[str, Any]:
    return {
        "id": promo.id,
        "name": promo.name,
        "status": "enabled",
        "state": "ready",
        "redeem_frequency": "unlimited",
        "authentication_systems": ["email"],
        "secured_order_ids": False,
        "rewards": [
            {"sku": r.sku, "name": r.name, "state": "ready", "status": "enabled"}
            for r in promo.rewards.values()
        ],
    }


def _redemption_json(record: RedemptionRecord) -> dict[str, Any]:
    """Shape of providers.md 1.6 "Redeemed response example"."""
    reward_codes = None
    if record.codes:
        reward_codes = {
            "type": "unique_code",
            "codes": [dict(code) for code in record.codes],
            "expiration_datetime": None,
        }
    return {
        "id": record.id,
        "url": f"https://redemption-sandbox.ifeelgoods.com/#/{record.id}",
        "state": record.state,
        "order_id": record.order_id,
        "testing": True,
        "created_datetime": record.created,
        "updated_datetime": record.updated,
        "redeemed_datetime": record.redeemed,
        "cancelable": record.state in ("pending", "booked"),
        "promotion": {"id": record.promotion_id, "status": "enabled", "state": "ready"},
        "reward": (
            {"sku": record.reward_sku, "status": "enabled", "state": "ready"}
            if record.reward_sku
            else None
        ),
        "user": {"email": record.user.get("email")} if record.user else None,
        "reward_codes": reward_codes,
    }
