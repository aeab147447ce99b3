"""Sandboxes, Ifeelgoods: a local simulator of the Fulfillment API v2 (providers.md section 1).

Stage: test infrastructure shipped with the package, so ``rewardrelay`` can run end to end
without vendor credentials and so the worker's retry paths can be tested against a real HTTP
server. It implements the vendor-documented behaviour (``data``/``version`` envelope,
``paging``, ``{error_name, error_message}`` errors, ``order_id`` idempotency with 201 then
200) and the parts providers.md tags [DESIGN] (integer ``version`` on every redemption,
``If-Match`` on actions, ``user_mismatch``/``conflict_uniqueness`` on replays).
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify, request

from sandboxes.base import SandboxState, current_fault, install
from sandboxes.faults import FaultKind

__all__ = ["IfeelgoodsState", "create_app"]

API_PREFIX = "/fulfillment/v2"
TOKEN_TTL_SECONDS = 7200  # providers.md 1.2: expires_in 7200 in the blueprint example
DEFAULT_PER_PAGE = 20  # providers.md 1.4 [DESIGN]
MAX_PER_PAGE = 100  # keeps a careless list call cheap
_ID_ALPHABET = string.ascii_uppercase + string.digits
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O/1/I, like printed gift cards

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

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> Response:
        return _error(404)

    @app.errorhandler(405)
    def _not_allowed(_exc: Exception) -> Response:
        return _error(404)

    @app.before_request
    def _authenticate() -> Response | None:
        if not request.path.startswith(API_PREFIX):
            return None
        header_key = request.headers.get("Api-Key")
        header_secret = request.headers.get("Api-Secret")
        if header_key is not None or header_secret is not None:
            ok = secrets.compare_digest(header_key or "", key) and secrets.compare_digest(
                header_secret or "", secret
            )
            return None if ok else _error(401)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and st.token_status(token.strip()) == "valid":
            return None
        return _error(401)

    @app.post("/oauth/token")
    def _token() -> tuple[Response, int] | Response:
        """providers.md 1.2 [PUB S1 apiary]: client_id/client_secret, grant account_application."""
        body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        body = body if isinstance(body, dict) else {}
        ok = (
            secrets.compare_digest(str(body.get("client_id", "")), key)
            and secrets.compare_digest(str(body.get("client_secret", "")), secret)
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
        token, _created = st.mint_token(TOKEN_TTL_SECONDS)
        return jsonify(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": TOKEN_TTL_SECONDS,
                "refresh_token": None,
                "scope": "",
            }
        )

    def single(record: RedemptionRecord, status: int = 200) -> tuple[Response, int]:
        return jsonify({"data": _redemption_json(record), "version": record.version}), status

    def data_body() -> dict[str, Any] | None:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            return None
        data: dict[str, Any] = body["data"]
        return data

    def valid_user(user: Any) -> bool:
        return (
            isinstance(user, dict) and isinstance(user.get("email"), str) and "@" in user["email"]
        )

    def same_user(record: RedemptionRecord, user: dict[str, Any] | None) -> bool:
        if record.user is None or user is None:
            return True
        return str(record.user.get("email", "")).lower() == str(user.get("email", "")).lower()

    def redeem_record(record: RedemptionRecord, sku: str) -> None:
        promo = st.promotions[record.promotion_id]
        reward = promo.rewards[sku]
        record.reward_sku = sku
        record.state = "redeemed"
        record.version += 1
        record.updated = record.redeemed = _now()
        record.codes = [
            {"name": reward.code_name, "value": _new_code(), "format": "string", "usage": "primary"}
        ]

    def check_if_match(record: RedemptionRecord) -> Response | None:
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

    @app.get(f"{API_PREFIX}/accounts/me")
    def _account() -> Response:
        return jsonify(
            {
                "data": {
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
            }
        )

    @app.get(f"{API_PREFIX}/promotions/<int:promotion_id>")
    def _promotion(promotion_id: int) -> Response:
        promo = st.promotions.get(promotion_id)
        if promo is None:
            return _error(404)
        return jsonify(
            {
                "data": {
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
            }
        )

    @app.post(f"{API_PREFIX}/promotions/<int:promotion_id>/redemptions")
    def _create_or_find(promotion_id: int) -> tuple[Response, int] | Response:
        """providers.md 1.6: create (201, state pending) or find (200) by order_id."""
        promo = st.promotions.get(promotion_id)
        if promo is None:
            return _error(404)
        data = data_body()
        if data is None or not isinstance(data.get("order_id"), str) or not data["order_id"]:
            return _error(422, "invalid_request", "data.order_id is required.")
        user = data.get("user")
        if user is not None and not valid_user(user):
            return _error(422, "invalid_user")
        reward = data.get("reward")
        sku = reward.get("sku") if isinstance(reward, dict) else None
        if sku is not None and sku not in promo.rewards:
            return _error(404, "not_found", "Unknown reward sku for this promotion.")
        order_id: str = data["order_id"]
        with st.lock:
            existing = st.by_order.get((promotion_id, order_id))
            if existing is not None:
                return single(st.redemptions[existing], 200)
            now = _now()
            record = RedemptionRecord(
                id=_new_redemption_id(),
                promotion_id=promotion_id,
                order_id=order_id,
                state="pending",
                version=1,
                reward_sku=sku,
                user=dict(user) if user else None,
                created=now,
                updated=now,
            )
            st.redemptions[record.id] = record
            st.by_order[(promotion_id, order_id)] = record.id
            st.record_issue(order_id)
            return single(record, 201)

    @app.post(
        f"{API_PREFIX}/promotions/<int:promotion_id>/rewards/<sku>/redemptions/actions/redeem"
    )
    def _create_and_redeem(promotion_id: int, sku: str) -> tuple[Response, int] | Response:
        """providers.md 1.9 [PUB S3]: 201 first, 200 on replay with same order_id and user.

        An ``order_id`` whose redemption exists but is not redeemed (created with the
        two-call flow, or booked) is handed back as it is, 200: "the same redemption, no
        new charge" (1.9). Whether the vendor would redeem it instead is not documented
        [DESIGN]; a client must then redeem it itself, with If-Match.
        """
        promo = st.promotions.get(promotion_id)
        if promo is None or sku not in promo.rewards:
            return _error(404)
        data = data_body()
        if data is None or not isinstance(data.get("order_id"), str) or not data["order_id"]:
            return _error(422, "invalid_request", "data.order_id is required.")
        if not valid_user(data.get("user")):
            return _error(422, "invalid_user")
        user: dict[str, Any] = data["user"]
        order_id: str = data["order_id"]
        with st.lock:
            existing_id = st.by_order.get((promotion_id, order_id))
            if existing_id is not None:
                record = st.redemptions[existing_id]
                if not same_user(record, user):
                    return _error(409, "user_mismatch")
                if record.reward_sku is not None and record.reward_sku != sku:
                    return _error(409, "conflict_uniqueness")
                if record.state not in ("redeemed", "pending", "booked"):
                    return _error(422, "operation_refused")
                return single(record, 200)
            now = _now()
            record = RedemptionRecord(
                id=_new_redemption_id(),
                promotion_id=promotion_id,
                order_id=order_id,
                state="pending",
                version=0,  # redeem_record bumps it to 1: created and redeemed in one change
                reward_sku=sku,
                user=dict(user),
                created=now,
                updated=now,
            )
            redeem_record(record, sku)
            st.redemptions[record.id] = record
            st.by_order[(promotion_id, order_id)] = record.id
            st.record_issue(order_id)
            return single(record, 201)

    @app.get(f"{API_PREFIX}/promotions/<int:promotion_id>/redemptions")
    def _list(promotion_id: int) -> Response:
        """providers.md 1.6 filters; 1.3/1.4 ``paging`` with page/per_page [DESIGN]."""
        if promotion_id not in st.promotions:
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
        with st.lock:
            rows = [
                r
                for r in st.redemptions.values()
                if r.promotion_id == promotion_id
                and all(v is None or getattr(r, k) == v for k, v in filters.items())
                and (email is None or (r.user or {}).get("email", "").lower() == email.lower())
            ]
            start = (page - 1) * per_page
            data = [_redemption_json(r) for r in rows[start : start + per_page]]
        return jsonify(
            {"data": data, "paging": {"page": page, "per_page": per_page, "total": len(rows)}}
        )

    @app.get(f"{API_PREFIX}/redemptions/<redemption_id>")
    def _get(redemption_id: str) -> tuple[Response, int] | Response:
        with st.lock:
            record = st.redemptions.get(redemption_id)
            if record is None:
                return _error(404)
            return single(record)

    @app.post(f"{API_PREFIX}/redemptions/<redemption_id>/actions/redeem")
    def _redeem(redemption_id: str) -> tuple[Response, int] | Response:
        """providers.md 1.6 redeem action; If-Match per 1.8 [DESIGN]."""
        data = data_body()
        if data is None or not valid_user(data.get("user")):
            return _error(422, "invalid_user")
        user: dict[str, Any] = data["user"]
        reward = data.get("reward")
        with st.lock:
            record = st.redemptions.get(redemption_id)
            if record is None:
                return _error(404)
            refused = check_if_match(record)
            if refused is not None:
                return refused
            if not same_user(record, user):
                return _error(409, "user_mismatch")
            if record.state == "redeemed":
                return single(record)
            if record.state != "pending":
                return _error(422, "operation_refused")
            sku = reward.get("sku") if isinstance(reward, dict) else record.reward_sku
            if sku is None or sku not in st.promotions[record.promotion_id].rewards:
                return _error(422, "invalid_request", "A valid reward sku is required.")
            record.user = record.user or dict(user)
            redeem_record(record, sku)
            return single(record)

    @app.post(f"{API_PREFIX}/redemptions/<redemption_id>/actions/cancel")
    def _cancel(redemption_id: str) -> tuple[Response, int] | Response:
        """providers.md 1.7: booked/pending can be canceled; redeemed is terminal."""
        with st.lock:
            record = st.redemptions.get(redemption_id)
            if record is None:
                return _error(404)
            refused = check_if_match(record)
            if refused is not None:
                return refused
            if record.state == "canceled":
                return single(record)
            if record.state not in ("pending", "booked"):
                return _error(422, "operation_refused")
            record.state = "canceled"
            record.version += 1
            record.updated = _now()
            return single(record)

    return app


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
