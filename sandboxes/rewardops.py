"""Sandboxes, RewardOps: a local simulator of API v4 program orders (providers.md section 2).

Stage: test infrastructure shipped with the package, so ``rewardrelay`` runs without vendor
credentials and the worker's token refresh, 409-adoption and polling paths can be tested
against a real HTTP server. Implements the client-credentials token flow (2.2), the
``{status, result}`` envelope and error body (2.3), ``pagination`` (2.4), program orders
(2.6) with upper-case order status and lower-case item fulfilment status (2.7 [DESIGN]) and
``program_order_id`` uniqueness answered with 409 (2.9 [DESIGN]).

Items move ``pending → processing → delivered`` over ``delivery_delay`` seconds, computed
lazily whenever an order is read (no background threads). The item token ``tok-reject``
ends ``rejected`` instead.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import secrets
import string
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify, request

from sandboxes.base import CONTROL_PREFIX, SandboxState, install

__all__ = ["ItemSpec", "RewardOpsState", "create_app"]

API_PREFIX = "/api/v4"
TOKEN_TTL_SECONDS = 7200  # providers.md 2.2 [SEED 002]: tokens live two hours
DEFAULT_DELIVERY_DELAY_SECONDS = 0.5  # time an item takes from pending to delivered
DEFAULT_PER_PAGE = 10  # providers.md 2.4: SDK comments show 10
MAX_PER_PAGE = 100
SEEDED_PROGRAM_ID = 12
_CODE_ALPHABET = string.ascii_uppercase + string.digits

_REASONS = {
    400: "Parameter Error",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Remote API Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class ItemSpec:
    """A catalogue item reachable by ``item_order_token``.

    ``kind`` is ``code`` (delivers ``assets.codes``), ``link`` (``assets.links``),
    ``physical`` (delivers with carrier tracking, no assets) or ``reject`` (ends rejected).
    """

    token: str
    name: str
    kind: str
    supplier_id: int = 7
    supplier_name: str = "Sandbox Supplier"


def default_catalogue() -> dict[int, dict[str, ItemSpec]]:
    items = [
        ItemSpec("tok-gift-25", "Sandbox $25 Gift Card", "code"),
        ItemSpec("tok-gift-10", "Sandbox $10 Gift Card", "code"),
        ItemSpec("tok-link-15", "Sandbox $15 eGift (redirect link)", "link"),
        ItemSpec("tok-physical-mug", "Sandbox Coffee Mug", "physical", 8, "Sandbox Merch"),
        ItemSpec("tok-reject", "Sandbox item the supplier always rejects", "reject"),
    ]
    return {SEEDED_PROGRAM_ID: {item.token: item for item in items}}


@dataclass
class ItemRecord:
    id: int
    spec: ItemSpec
    code: str


@dataclass
class OrderRecord:
    id: str
    program_id: int
    program_order_id: str | None
    member: dict[str, Any]
    payment_status: str
    created_at: float
    items: list[ItemRecord] = field(default_factory=list)


class RewardOpsState(SandboxState):
    """Programs, orders and tokens in memory; ``delivery_delay`` is changeable at runtime."""

    def __init__(
        self,
        *,
        seed: int | None = 0,
        delivery_delay: float = DEFAULT_DELIVERY_DELAY_SECONDS,
    ) -> None:
        super().__init__(seed=seed)
        self.default_delivery_delay = delivery_delay
        self.delivery_delay = delivery_delay
        self.programs = default_catalogue()
        self.orders: dict[str, OrderRecord] = {}
        self.by_program_order: dict[tuple[int, str], str] = {}
        self._next_item_id = 1
        self._next_order = 1
        self._id_lock = threading.Lock()

    def _reset_data(self) -> None:
        self.orders.clear()
        self.by_program_order.clear()
        self.delivery_delay = self.default_delivery_delay

    def next_order_id(self) -> str:
        with self._id_lock:
            order_id = f"RO{self._next_order:08d}"
            self._next_order += 1
            return order_id

    def next_item_id(self) -> int:
        with self._id_lock:
            item_id = self._next_item_id
            self._next_item_id += 1
            return item_id


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _error(status: int, name: str | None = None, message: str | None = None) -> Response:
    """providers.md 2.3 [SEED 002] error envelope."""
    body = {
        "status": "error",
        "result": {
            "error": {
                "code": status,
                "reason": name or _REASONS.get(status, "Error"),
                "detail": message or _REASONS.get(status, "Error"),
            }
        },
    }
    response = jsonify(body)
    response.status_code = status
    return response


def _ok(result: dict[str, Any], **extra: Any) -> Response:
    return jsonify({"status": "OK", "result": result, **extra})


def create_app(
    state: RewardOpsState | None = None,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> Flask:
    """Build the RewardOps sandbox.

    Credentials default to ``REWARDOPS_CLIENT_ID``/``REWARDOPS_CLIENT_SECRET`` from the
    environment, else ``sandbox-client``/``sandbox-client-secret``. The state is exposed
    as ``app.extensions["sandbox_state"]``.
    """
    cid = client_id or os.environ.get("REWARDOPS_CLIENT_ID") or "sandbox-client"
    csecret = client_secret or os.environ.get("REWARDOPS_CLIENT_SECRET") or "sandbox-client-secret"
    st = state if state is not None else RewardOpsState()
    app = Flask("sandboxes.rewardops")
    app.extensions["sandbox_state"] = st
    install(app, st, _error)

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> Response:
        return _error(404, None, "Resource or service not found")

    @app.errorhandler(405)
    def _not_allowed(_exc: Exception) -> Response:
        return _error(404, None, "Resource or service not found")

    @app.before_request
    def _authenticate() -> Response | None:
        if not request.path.startswith(API_PREFIX) or request.path == f"{API_PREFIX}/auth/token":
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        status = st.token_status(token.strip()) if scheme.lower() == "bearer" else "unknown"
        if status == "valid":
            return None
        detail = (
            "The access token expired" if status == "expired" else "The access token is invalid"
        )
        response = _error(401, None, detail)
        response.headers["WWW-Authenticate"] = (
            f'Bearer realm="RewardOps", error="invalid_token", error_description="{detail}"'
        )
        return response

    @app.post(f"{API_PREFIX}/auth/token")
    def _token() -> tuple[Response, int] | Response:
        """providers.md 2.2: Basic client credentials, grant_type client_credentials."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        given_id, _, given_secret = decoded.partition(":")
        valid = (
            scheme.lower() == "basic"
            and secrets.compare_digest(given_id, cid)
            and secrets.compare_digest(given_secret, csecret)
        )
        if not valid:
            response = jsonify(
                {"error": "invalid_client", "error_description": "Client authentication failed."}
            )
            response.headers["WWW-Authenticate"] = (
                'Basic realm="RewardOps", error="invalid_client", '
                'error_description="Client authentication failed."'
            )
            return response, 401
        body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
            return jsonify(
                {"error": "unsupported_grant_type", "error_description": "Use client_credentials."}
            ), 400
        token, created_at = st.mint_token(TOKEN_TTL_SECONDS)
        return jsonify(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": TOKEN_TTL_SECONDS,
                "created_at": created_at,
            }
        )

    @app.post(f"{CONTROL_PREFIX}/config")
    def _config() -> tuple[Response, int] | Response:
        """Sandbox-only: ``{"delivery_delay": seconds}`` (0 delivers immediately)."""
        body = request.get_json(silent=True)
        delay = body.get("delivery_delay") if isinstance(body, dict) else None
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            return jsonify({"error": "delivery_delay must be a number >= 0"}), 400
        with st.lock:
            st.delivery_delay = float(delay)
        return jsonify({"delivery_delay": st.delivery_delay})

    def program_items(program_id: int) -> dict[str, ItemSpec] | None:
        return st.programs.get(program_id)

    @app.post(f"{API_PREFIX}/programs/<int:program_id>/orders")
    def _create_order(program_id: int) -> tuple[Response, int] | Response:
        """providers.md 2.6 body; 2.9 [DESIGN]: duplicate program_order_id → 409."""
        catalogue = program_items(program_id)
        if catalogue is None:
            return _error(404, None, "Program not found")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, None, "Request body must be a JSON object")
        member = body.get("member")
        if not isinstance(member, dict) or not member.get("id"):
            return _error(400, None, "Validation failed for parameter member: id is required")
        raw_items = body.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            return _error(400, None, "Validation failed for parameter items: is required")
        wanted: list[tuple[ItemSpec, int]] = []
        for raw in raw_items:
            if not isinstance(raw, dict):
                return _error(400, None, "Validation failed for parameter items: not an object")
            spec = catalogue.get(str(raw.get("item_order_token", "")))
            if spec is None:
                return _error(400, None, "Validation failed for parameter item_order_token")
            quantity = raw.get("quantity", 1)
            if (
                isinstance(quantity, bool)
                or not isinstance(quantity, int)
                or not 1 <= quantity <= 50
            ):
                return _error(400, None, "Validation failed for parameter quantity")
            wanted.append((spec, quantity))
        program_order_id = body.get("program_order_id")
        if program_order_id is not None and not isinstance(program_order_id, str | int):
            return _error(400, None, "Validation failed for parameter program_order_id")
        key = str(program_order_id) if program_order_id is not None else None
        with st.lock:
            if key is not None and (program_id, key) in st.by_program_order:
                return _error(409, None, "program_order_id already exists")
            order = OrderRecord(
                id=st.next_order_id(),
                program_id=program_id,
                program_order_id=key,
                member=dict(member),
                payment_status=str(body.get("payment_status", "PAID")).upper(),
                created_at=st.clock(),
            )
            for spec, quantity in wanted:
                for _ in range(quantity):
                    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
                    order.items.append(ItemRecord(id=st.next_item_id(), spec=spec, code=code))
            st.orders[order.id] = order
            if key is not None:
                st.by_program_order[(program_id, key)] = order.id
            st.record_issue(key or order.id)
            return _ok({"order": _order_json(order, st)})

    @app.get(f"{API_PREFIX}/programs/<int:program_id>/orders/<order_ref>")
    def _get_order(program_id: int, order_ref: str) -> Response:
        """providers.md 2.6: ``use_program_order_id=true`` looks up by our own id."""
        if program_items(program_id) is None:
            return _error(404, None, "Program not found")
        by_program_id = request.args.get("use_program_order_id", "false").lower() == "true"
        with st.lock:
            order_id = (
                st.by_program_order.get((program_id, order_ref)) if by_program_id else order_ref
            )
            order = st.orders.get(order_id) if order_id is not None else None
            if order is None or order.program_id != program_id:
                return _error(404, None, "Order not found")
            return _ok({"order": _order_json(order, st)})

    @app.get(f"{API_PREFIX}/programs/<int:program_id>/orders")
    def _list_orders(program_id: int) -> Response:
        """providers.md 2.4/2.6: ``member_id`` required (SDK), ``page``, ``per_page_count``."""
        if program_items(program_id) is None:
            return _error(404, None, "Program not found")
        member_id = request.args.get("member_id")
        if not member_id:
            return _error(400, None, "Validation failed for parameter member_id: is required")
        try:
            page = max(1, int(request.args.get("page", "1")))
            per_page = min(
                MAX_PER_PAGE, max(1, int(request.args.get("per_page_count", DEFAULT_PER_PAGE)))
            )
        except ValueError:
            return _error(400, None, "Validation failed for parameter page: is not of type integer")
        with st.lock:
            rows = [
                o
                for o in st.orders.values()
                if o.program_id == program_id and str(o.member.get("id")) == member_id
            ]
            rows.sort(key=lambda o: o.created_at, reverse=True)  # sort_by=newest default
            start = (page - 1) * per_page
            orders = [_order_json(o, st) for o in rows[start : start + per_page]]
        pages = max(1, math.ceil(len(rows) / per_page))
        pagination = {
            "previous": page - 1 if page > 1 else None,
            "next": page + 1 if page < pages else None,
            "current": page,
            "per_page_count": per_page,
            "count": len(rows),
            "pages": pages,
        }
        return _ok({"orders": orders}, pagination=pagination)

    return app


def _item_status(item: ItemRecord, elapsed: float, delay: float) -> str:
    if elapsed >= delay:
        return "rejected" if item.spec.kind == "reject" else "delivered"
    return "pending" if elapsed < delay / 2 else "processing"


def _order_status(statuses: list[str]) -> str:
    """Upper case (providers.md 2.7 [DESIGN]); clients must judge delivery by items."""
    if any(s in ("pending", "processing") for s in statuses):
        return "PENDING"
    failed = [s for s in statuses if s in ("rejected", "canceled", "returned")]
    if not failed:
        return "PENDING"  # the documented enum has no "complete"; items carry the truth
    return "STOPPED" if len(failed) == len(statuses) else "PARTIAL"


def _order_json(order: OrderRecord, st: RewardOpsState) -> dict[str, Any]:
    """Shape of providers.md 2.6 "Order object" (items grouped by supplier)."""
    elapsed = st.clock() - order.created_at
    statuses: list[str] = []
    suppliers: dict[int, dict[str, Any]] = {}
    for item in order.items:
        status = _item_status(item, elapsed, st.delivery_delay)
        statuses.append(status)
        supplier = suppliers.setdefault(
            item.spec.supplier_id,
            {"id": item.spec.supplier_id, "name": item.spec.supplier_name, "items": []},
        )
        delivered = status == "delivered"
        codes = []
        links = []
        if delivered and item.spec.kind == "code":
            codes = [{"label": "Gift card code", "type": "PLAIN", "value": item.code}]
        if delivered and item.spec.kind == "link":
            links = [
                {
                    "label": "Redeem online",
                    "type": "REDIRECT",
                    "value": f"https://rewards.sandbox.invalid/r/{item.code}",
                }
            ]
        supplier["items"].append(
            {
                "id": item.id,
                "supplier_item_id": item.spec.token,
                "name": item.spec.name,
                "type": "Gift Card" if item.spec.kind in ("code", "link") else "Merchandise",
                "fulfillment": {
                    "status": status,
                    "status_notes": "Rejected by supplier" if status == "rejected" else None,
                    "supplier_order_id": f"S-{order.id}-{item.id}",
                    "carrier_name": "Sandbox Post" if item.spec.kind == "physical" else None,
                    "carrier_tracking": (
                        f"TRACK{item.id:06d}"
                        if delivered and item.spec.kind == "physical"
                        else None
                    ),
                },
                "assets": {"codes": codes, "links": links, "images": []},
            }
        )
    return {
        "id": order.id,
        "program_order_id": order.program_order_id,
        "program_id": order.program_id,
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.created_at + min(elapsed, st.delivery_delay)),
        "status": _order_status(statuses),
        "payment_status": order.payment_status,
        "member": {"id": order.member.get("id")},
        "suppliers": list(suppliers.values()),
    }
