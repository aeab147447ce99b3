"""Sandboxes, RewardOps: a local simulator of API v4 program orders (providers.md section 2).

Stage: test infrastructure shipped with the package, so ``rewardrelay`` runs without vendor
credentials and the worker's token refresh, 409-adoption and polling paths can be tested
against a real HTTP server. Implements the client-credentials token flow (2.2), the
``{status, result}`` envelope and error body (2.3), ``pagination`` (2.4), program orders
(2.6) with upper-case order status and lower-case item fulfilment status (2.7 [DESIGN]) and
``program_order_id`` uniqueness answered with 409 (2.9 [DESIGN]).

Create-order validation follows the vendor's reference ([PUB S5] "Create an order"): an
integer ``program_id``, ``member`` with an ``id``, ``items[]`` each with
``item_order_token``, ``quantity`` and ``member_spend {currency_code, amount}`` (one object,
or the SDK's array of them; only ``retail_value`` is optional), ``payment_status`` in
``PAID|PENDING|REJECTED|REFUNDED``. Each failure is the vendor's 400 "Parameter Error" with
``Validation failed for parameter <name>: <problem>``. The spend comes back as the order
item's ``member_paid`` hash (``{"USD": "0"}``), as in the vendor's order object.

Items move ``pending → processing → delivered`` over ``delivery_delay`` seconds, computed
lazily whenever an order is read (no background threads). The item token ``tok-reject``
ends ``rejected`` instead.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import secrets
import string
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify, request

from sandboxes.base import CONTROL_PREFIX, Endpoint, SandboxState, install, register_endpoints

__all__ = ["ENDPOINTS", "ItemSpec", "RewardOpsApi", "RewardOpsState", "create_app"]

API_PREFIX = "/api/v4"
TOKEN_TTL_SECONDS = 7200  # providers.md 2.2 [SEED 002]: tokens live two hours
DEFAULT_DELIVERY_DELAY_SECONDS = 0.5  # time an item takes from pending to delivered
DEFAULT_PER_PAGE = 10  # providers.md 2.4: SDK comments show 10
MAX_PER_PAGE = 100
SEEDED_PROGRAM_ID = 12
_CODE_ALPHABET = string.ascii_uppercase + string.digits
PAYMENT_STATUSES = ("PAID", "PENDING", "REJECTED", "REFUNDED")  # providers.md 2.6
# [SEED 002] data types: integer = numerals with an optional leading "-"; decimal adds ".".
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)")
# [PUB S5] member spend currency: an ISO code (USD, CAD) or a points code "XRO-xxx".
_CURRENCY = re.compile(r"[A-Z]{3}|XRO-[A-Za-z0-9]+")

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
    member_paid: dict[str, str] = field(default_factory=dict)  # currency code -> amount


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
    api = RewardOpsApi(st, cid, csecret)
    app.register_error_handler(404, api.not_found)
    app.register_error_handler(405, api.not_found)
    app.before_request(api.authenticate)
    register_endpoints(app, api, ENDPOINTS)
    return app


class RewardOpsApi:
    """The sandbox's request handlers, one method per endpoint of :data:`ENDPOINTS`."""

    def __init__(self, state: RewardOpsState, client_id: str, client_secret: str) -> None:
        self.st = state
        self._client_id = client_id
        self._client_secret = client_secret

    def not_found(self, _exc: Exception) -> Response:
        return _error(404, None, "Resource or service not found")

    def authenticate(self) -> Response | None:
        """providers.md 2.2: every API call but the token request carries a valid Bearer."""
        if not request.path.startswith(API_PREFIX) or request.path == f"{API_PREFIX}/auth/token":
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        status = self.st.token_status(token.strip()) if scheme.lower() == "bearer" else "unknown"
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

    def token(self) -> tuple[Response, int] | Response:
        """providers.md 2.2: Basic client credentials, grant_type client_credentials."""
        if not self._client_authenticated():
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
        token, created_at = self.st.mint_token(TOKEN_TTL_SECONDS)
        return jsonify(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": TOKEN_TTL_SECONDS,
                "created_at": created_at,
            }
        )

    def _client_authenticated(self) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        given_id, _, given_secret = decoded.partition(":")
        return (
            scheme.lower() == "basic"
            and secrets.compare_digest(given_id, self._client_id)
            and secrets.compare_digest(given_secret, self._client_secret)
        )

    def config(self) -> tuple[Response, int] | Response:
        """Sandbox-only: ``{"delivery_delay": seconds}`` (0 delivers immediately)."""
        body = request.get_json(silent=True)
        delay = body.get("delivery_delay") if isinstance(body, dict) else None
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            return jsonify({"error": "delivery_delay must be a number >= 0"}), 400
        with self.st.lock:
            self.st.delivery_delay = float(delay)
        return jsonify({"delivery_delay": self.st.delivery_delay})

    def _catalogue(self, program_id: str) -> tuple[int, dict[str, ItemSpec]] | Response:
        """The program's items; 400 for a non-integer id (the vendor's own example), 404
        for an unknown program."""
        if not _INTEGER.fullmatch(program_id):
            return _error(400, None, _invalid("program_id", "is not of type integer"))
        catalogue = self.st.programs.get(int(program_id))
        if catalogue is None:
            return _error(404, None, "Program not found")
        return int(program_id), catalogue

    def create_order(self, program_id: str) -> tuple[Response, int] | Response:
        """providers.md 2.6 body; 2.9 [DESIGN]: duplicate program_order_id → 409."""
        program = self._catalogue(program_id)
        if isinstance(program, Response):
            return program
        number, catalogue = program
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, None, "Request body must be a JSON object")
        request_or_problem = _order_request(body, catalogue)
        if isinstance(request_or_problem, str):
            return _error(400, None, request_or_problem)
        return self._commit_order(number, request_or_problem)

    def _commit_order(self, program_id: int, wanted: OrderRequest) -> Response:
        st = self.st
        with st.lock:
            key = wanted.program_order_id
            if key is not None and (program_id, key) in st.by_program_order:
                return _error(409, None, "program_order_id already exists")
            order = OrderRecord(
                id=st.next_order_id(),
                program_id=program_id,
                program_order_id=key,
                member=dict(wanted.member),
                payment_status=wanted.payment_status,
                created_at=st.clock(),
            )
            for spec, quantity, paid in wanted.items:
                for _ in range(quantity):
                    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
                    item = ItemRecord(st.next_item_id(), spec, code, member_paid=dict(paid))
                    order.items.append(item)
            st.orders[order.id] = order
            if key is not None:
                st.by_program_order[(program_id, key)] = order.id
            st.record_issue(key or order.id)
            return _ok({"order": _order_json(order, st)})

    def get_order(self, program_id: str, order_ref: str) -> Response:
        """providers.md 2.6: ``use_program_order_id=true`` looks up by our own id."""
        program = self._catalogue(program_id)
        if isinstance(program, Response):
            return program
        number, _catalogue = program
        by_program_id = request.args.get("use_program_order_id", "false").lower() == "true"
        with self.st.lock:
            order_id = (
                self.st.by_program_order.get((number, order_ref)) if by_program_id else order_ref
            )
            order = self.st.orders.get(order_id) if order_id is not None else None
            if order is None or order.program_id != number:
                return _error(404, None, "Order not found")
            return _ok({"order": _order_json(order, self.st)})

    def list_orders(self, program_id: str) -> Response:
        """providers.md 2.4/2.6: ``member_id`` required (SDK), ``page``, ``per_page_count``."""
        program = self._catalogue(program_id)
        if isinstance(program, Response):
            return program
        number, _catalogue = program
        member_id = request.args.get("member_id")
        if not member_id:
            return _error(400, None, _invalid("member_id", "is required"))
        try:
            page = max(1, int(request.args.get("page", "1")))
            per_page = min(
                MAX_PER_PAGE, max(1, int(request.args.get("per_page_count", DEFAULT_PER_PAGE)))
            )
        except ValueError:
            return _error(400, None, _invalid("page", "is not of type integer"))
        with self.st.lock:
            rows = [
                o
                for o in self.st.orders.values()
                if o.program_id == number and str(o.member.get("id")) == member_id
            ]
            rows.sort(key=lambda o: o.created_at, reverse=True)  # sort_by=newest default
            start = (page - 1) * per_page
            orders = [_order_json(o, self.st) for o in rows[start : start + per_page]]
        return _ok({"orders": orders}, pagination=_pagination(page, per_page, len(rows)))


ENDPOINTS = (
    Endpoint("POST", f"{API_PREFIX}/auth/token", "token"),
    Endpoint("POST", f"{CONTROL_PREFIX}/config", "config"),
    Endpoint("POST", f"{API_PREFIX}/programs/<program_id>/orders", "create_order"),
    Endpoint("GET", f"{API_PREFIX}/programs/<program_id>/orders/<order_ref>", "get_order"),
    Endpoint("GET", f"{API_PREFIX}/programs/<program_id>/orders", "list_orders"),
)


@dataclass(frozen=True)
class OrderRequest:
    """A validated create-order body."""

    member: dict[str, Any]
    items: list[tuple[ItemSpec, int, dict[str, str]]]  # spec, quantity, member_paid
    program_order_id: str | None
    payment_status: str


def _invalid(parameter: str, problem: str) -> str:
    """The vendor's detail text (providers.md 2.3 example)."""
    return f"Validation failed for parameter {parameter}: {problem}"


def _order_request(body: dict[str, Any], catalogue: dict[str, ItemSpec]) -> OrderRequest | str:
    """Validate a create-order body (providers.md 2.6, [PUB S5] "Create an order"); the
    vendor's 400 detail on the first problem found."""
    member = body.get("member")
    if not isinstance(member, dict) or not member.get("id"):
        return _invalid("member", "id is required")
    raw_items = body.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        return _invalid("items", "is required")
    items: list[tuple[ItemSpec, int, dict[str, str]]] = []
    for index, raw in enumerate(raw_items):
        item = _order_item(raw, f"items[{index}]", catalogue)
        if isinstance(item, str):
            return item
        items.append(item)
    program_order_id = body.get("program_order_id")
    if program_order_id is not None and not isinstance(program_order_id, str | int):
        return _invalid("program_order_id", "is not of type string")
    payment_status = body.get("payment_status", "PAID")
    if not isinstance(payment_status, str) or payment_status.upper() not in PAYMENT_STATUSES:
        return _invalid("payment_status", f"must be one of {', '.join(PAYMENT_STATUSES)}")
    return OrderRequest(
        member=member,
        items=items,
        program_order_id=str(program_order_id) if program_order_id is not None else None,
        payment_status=payment_status.upper(),
    )


def _order_item(
    raw: Any, where: str, catalogue: dict[str, ItemSpec]
) -> tuple[ItemSpec, int, dict[str, str]] | str:
    """One ``items[]`` entry: ``item_order_token``, ``quantity`` and ``member_spend`` are
    required ([PUB S5] lists only ``retail_value`` as optional)."""
    if not isinstance(raw, dict):
        return _invalid(where, "is not of type object")
    spec = catalogue.get(str(raw.get("item_order_token", "")))
    if spec is None:
        return _invalid(f"{where}.item_order_token", "is not a valid order token")
    quantity = raw.get("quantity")
    if quantity is None:
        return _invalid(f"{where}.quantity", "is required")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 50:
        return _invalid(f"{where}.quantity", "is not of type integer between 1 and 50")
    paid = _member_paid(raw.get("member_spend"), f"{where}.member_spend")
    if isinstance(paid, str):
        return paid
    return spec, quantity, paid


def _member_paid(raw: Any, where: str) -> dict[str, str] | str:
    """``member_spend {currency_code, amount}``, as one object or (the SDK's form) a
    non-empty array of them, as the order item's ``member_paid`` hash; or the problem."""
    if raw is None:
        return _invalid(where, "is required")
    entries = raw if isinstance(raw, list) else [raw]
    if not entries:
        return _invalid(where, "is required")
    paid: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            return _invalid(where, "is not of type object")
        currency = entry.get("currency_code")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            return _invalid(f"{where}.currency_code", "is not an ISO currency or XRO-xxx code")
        amount = entry.get("amount")
        if not isinstance(amount, str) or not _DECIMAL.fullmatch(amount):
            return _invalid(f"{where}.amount", "is not of type decimal")
        paid[currency] = amount
    return paid


def _pagination(page: int, per_page: int, count: int) -> dict[str, Any]:
    """providers.md 2.4 [SEED 002] ``pagination`` object."""
    pages = max(1, math.ceil(count / per_page))
    return {
        "previous": page - 1 if page > 1 else None,
        "next": page + 1 if page < pages else None,
        "current": page,
        "per_page_count": per_page,
        "count": count,
        "pages": pages,
    }


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
                "member_paid": dict(item.member_paid),
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
