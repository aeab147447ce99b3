"""Sandboxes, orders platform: a local simulator of the unnamed OAuth2 platform (providers.md 5).

Stage: test and demo infrastructure shipped with the package, so the orders source runs
without an account and its connect flow, token refresh and page walk can be tested over
real HTTP. From the seed (5.1 [SEED 001]): OAuth2 authorization code with one registered
redirect URL, pagination switched on by sending ``page`` (Laravel-style object), timestamps
``YYYY-MM-DD HH:MM:SS``, ``sort=field`` / ``sort=-field`` and ``filter[name]=v1,v2`` (an OR
list) on customers and orders.

[DESIGN] (5.2, Laravel Passport conventions): ``GET /oauth/authorize`` (this sandbox
approves at once and redirects with ``code`` and ``state``), ``POST /oauth/token`` with
``authorization_code`` and ``refresh_token`` grants (refresh tokens rotate: the old one is
revoked), resources under ``/api``, ``per_page`` default 15, Laravel error bodies
(``{"message": "Unauthenticated."}``), an embedded ``customer`` object on each order.

Control API: the shared ``/_sandbox`` endpoints (see :mod:`sandboxes`) plus
``POST /_sandbox/orders`` ``{"orders": [{"status", "total", "currency"?, "customer":
{"email", "first_name", "last_name"}}]}`` to seed orders (returns them) and
``POST /_sandbox/config`` ``{"access_ttl": seconds}``. ``issued`` counts refresh-token
grants as ``refresh`` and code exchanges as ``code``.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, request

from sandboxes.base import CONTROL_PREFIX, Endpoint, SandboxState, install, register_endpoints

__all__ = ["ENDPOINTS", "OrdersPlatformApi", "OrdersPlatformState", "create_app"]

API_PREFIX = "/api"
DEFAULT_ACCESS_TTL_SECONDS = 3600  # [DESIGN]
DEFAULT_PER_PAGE = 15  # providers.md 5.2: from the seed's example response
MAX_PER_PAGE = 100
ORDER_STATUSES = ("pending", "paid", "cancelled", "refunded")
_ORDER_FILTERS = {"id", "status", "currency", "customer_id"}
_ORDER_SORTS = {"id", "status", "total", "created_at", "updated_at"}
_MESSAGES = {
    400: "Bad Request",
    401: "Unauthenticated.",
    403: "This action is unauthorized.",
    404: "Not Found",
    422: "The given data was invalid.",
    429: "Too Many Attempts.",
    500: "Server Error",
    503: "Service Unavailable",
}


@dataclass
class OrderRecord:
    id: int
    status: str
    total: Decimal
    currency: str
    customer: dict[str, Any]
    created_at: float
    updated_at: float


class OrdersPlatformState(SandboxState):
    """Orders, authorization codes and refresh tokens in memory."""

    def __init__(self, *, seed: int | None = 0) -> None:
        super().__init__(seed=seed)
        self.orders: dict[int, OrderRecord] = {}
        self.codes: dict[str, str] = {}  # one-time code -> the redirect_uri it was issued for
        self.refresh_tokens: set[str] = set()
        self.access_ttl = DEFAULT_ACCESS_TTL_SECONDS
        self._next_id = 1
        self._id_lock = threading.Lock()

    def _reset_data(self) -> None:
        self.orders.clear()
        self.codes.clear()
        self.refresh_tokens.clear()
        self.access_ttl = DEFAULT_ACCESS_TTL_SECONDS

    def next_id(self) -> int:
        with self._id_lock:
            value = self._next_id
            self._next_id += 1
            return value


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _error(status: int, name: str | None = None, message: str | None = None) -> Response:
    """Laravel default error bodies (providers.md 5.2 [DESIGN]). A 422 is a validation
    failure: ``{"message": "The given data was invalid.", "errors": {name: [message]}}``,
    ``name`` being the field."""
    if status == 422:
        errors = {name: [message or _MESSAGES[422]]} if name else {}
        response = jsonify({"message": _MESSAGES[422], "errors": errors})
    else:
        response = jsonify({"message": message or _MESSAGES.get(status, "Error")})
    response.status_code = status
    return response


def _order_json(order: OrderRecord) -> dict[str, Any]:
    return {
        "id": order.id,
        "number": f"ORD-{order.id:06d}",
        "status": order.status,
        "total": f"{order.total:.2f}",
        "currency": order.currency,
        "customer_id": order.customer["id"],
        "customer": dict(order.customer),
        "created_at": _stamp(order.created_at),
        "updated_at": _stamp(order.updated_at),
    }


def _sort_key(order: OrderRecord, name: str) -> Any:
    return getattr(order, name)


def create_app(
    state: OrdersPlatformState | None = None,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    redirect_uri: str | None = None,
) -> Flask:
    """Build the orders platform sandbox.

    Credentials default to ``ORDERS_CLIENT_ID``/``ORDERS_CLIENT_SECRET``/
    ``ORDERS_REDIRECT_URI`` from the environment, else ``sandbox-orders``/
    ``sandbox-orders-secret``/``http://127.0.0.1:8765/callback``.
    """
    cid = client_id or os.environ.get("ORDERS_CLIENT_ID") or "sandbox-orders"
    csecret = client_secret or os.environ.get("ORDERS_CLIENT_SECRET") or "sandbox-orders-secret"
    registered = (
        redirect_uri or os.environ.get("ORDERS_REDIRECT_URI") or "http://127.0.0.1:8765/callback"
    )
    st = state if state is not None else OrdersPlatformState()
    app = Flask("sandboxes.orders_platform")
    app.extensions["sandbox_state"] = st
    install(app, st, _error)
    api = OrdersPlatformApi(st, cid, csecret, registered)
    app.register_error_handler(404, api.not_found)
    app.register_error_handler(405, api.not_allowed)
    app.before_request(api.authenticate)
    register_endpoints(app, api, ENDPOINTS)
    return app


class OrdersPlatformApi:
    """The sandbox's request handlers, one method per endpoint of :data:`ENDPOINTS`."""

    def __init__(
        self, state: OrdersPlatformState, client_id: str, client_secret: str, redirect_uri: str
    ) -> None:
        self.st = state
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri

    def not_found(self, _exc: Exception) -> Response:
        return _error(404)

    def not_allowed(self, _exc: Exception) -> Response:
        return _error(405, None, "The method is not supported for this route.")

    def authenticate(self) -> Response | None:
        """Every ``/api`` call carries a Bearer access token (5.2 [DESIGN])."""
        if not request.path.startswith(f"{API_PREFIX}/"):
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        status = self.st.token_status(token.strip()) if scheme.lower() == "bearer" else "unknown"
        return None if status == "valid" else _error(401)

    def authorize(self) -> Response:
        """Auto-approving consent screen: redirect back with a one-time code."""
        args = request.args
        if args.get("client_id") != self._client_id or args.get("redirect_uri") != (
            self._redirect_uri
        ):
            return _error(400, None, "Client authentication failed or redirect_uri mismatch.")
        if args.get("response_type") != "code":
            return _error(400, None, "The authorization grant type is not supported.")
        code = secrets.token_urlsafe(24)
        with self.st.lock:
            self.st.codes[code] = self._redirect_uri
        query = {"code": code}
        if args.get("state"):
            query["state"] = args["state"]
        response = Response(status=302)
        response.headers["Location"] = f"{self._redirect_uri}?{urlencode(query)}"
        return response

    def token(self) -> tuple[Response, int] | Response:
        """``authorization_code`` (code + redirect_uri) or ``refresh_token`` (rotating)."""
        form = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        form = form if isinstance(form, dict) else {}
        valid = secrets.compare_digest(str(form.get("client_id", "")), self._client_id) and (
            secrets.compare_digest(str(form.get("client_secret", "")), self._client_secret)
        )
        if not valid:
            return jsonify(
                {"error": "invalid_client", "message": "Client authentication failed"}
            ), 401
        with self.st.lock:
            refused = self._grant(form)
            if refused is not None:
                return refused
            access, _created = self.st.mint_token(self.st.access_ttl)
            refresh = secrets.token_urlsafe(32)
            self.st.refresh_tokens.add(refresh)
            return jsonify(
                {
                    "token_type": "Bearer",
                    "expires_in": self.st.access_ttl,
                    "access_token": access,
                    "refresh_token": refresh,
                }
            )

    def _grant(self, form: dict[str, Any]) -> tuple[Response, int] | None:
        """Check and consume the grant (caller holds the lock); the refusal, or None."""
        grant = form.get("grant_type")
        if grant == "authorization_code":
            uri = self.st.codes.pop(str(form.get("code", "")), None)
            if uri is None or uri != form.get("redirect_uri"):
                return _invalid_grant("The authorization code is invalid or was used.")
            self.st.record_issue("code")
            return None
        if grant == "refresh_token":
            old = str(form.get("refresh_token", ""))
            if old not in self.st.refresh_tokens:
                return _invalid_grant("The refresh token is invalid.")
            self.st.refresh_tokens.discard(old)  # rotation: a refresh token works once
            self.st.record_issue("refresh")
            return None
        return jsonify(
            {"error": "unsupported_grant_type", "message": "Unsupported grant type."}
        ), 400

    def config(self) -> tuple[Response, int] | Response:
        body = request.get_json(silent=True)
        ttl = body.get("access_ttl") if isinstance(body, dict) else None
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            return jsonify({"error": "access_ttl must be an integer >= 1"}), 400
        with self.st.lock:
            self.st.access_ttl = ttl
        return jsonify({"access_ttl": self.st.access_ttl})

    def seed(self) -> tuple[Response, int] | Response:
        body = request.get_json(silent=True)
        rows = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            return jsonify({"error": "body must be {orders: [...]}"}), 400
        created = []
        for row in rows:
            made = _new_order(self.st, row)
            if isinstance(made, str):
                return jsonify({"error": made}), 400
            created.append(_order_json(made))
        return jsonify({"orders": created})

    def list_orders(self) -> Response:
        """5.1 [SEED 001]: ``filter[name]=v1,v2``, ``sort``; paginated only with ``page``."""
        with self.st.lock:
            rows = list(self.st.orders.values())
        for key, value in request.args.items():
            if not key.startswith("filter["):
                continue
            name = key[len("filter[") : -1]
            if name not in _ORDER_FILTERS:
                return _error(400, None, f"Filter {name!r} is not allowed.")
            wanted = {v.strip() for v in value.split(",") if v.strip()}
            rows = [o for o in rows if str(_order_json(o)[name]) in wanted]
        sort = request.args.get("sort", "id")
        name = sort.lstrip("-")
        if name not in _ORDER_SORTS:
            return _error(400, None, f"Sort {name!r} is not allowed.")
        rows.sort(key=lambda o: (_sort_key(o, name), o.id), reverse=sort.startswith("-"))
        if "page" not in request.args:
            return jsonify([_order_json(o) for o in rows])  # 5.2: unpaginated bare array
        try:
            page = int(request.args["page"])
            per_page = int(request.args.get("per_page", DEFAULT_PER_PAGE))
        except ValueError:
            return _error(422, "page", "page and per_page must be integers.")
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            return _error(422, "page", f"page >= 1 and per_page 1..{MAX_PER_PAGE}.")
        return jsonify(_laravel_page(rows, page, per_page))

    def get_order(self, order_id: int) -> Response:
        with self.st.lock:
            order = self.st.orders.get(order_id)
            return jsonify(_order_json(order)) if order else _error(404)

    def update_order(self, order_id: int) -> Response:
        body = request.get_json(silent=True)
        status = body.get("status") if isinstance(body, dict) else None
        if status not in ORDER_STATUSES:
            return _error(422, "status", f"status must be one of {', '.join(ORDER_STATUSES)}.")
        with self.st.lock:
            order = self.st.orders.get(order_id)
            if order is None:
                return _error(404)
            order.status = str(status)
            order.updated_at = self.st.clock()
            return jsonify(_order_json(order))


ENDPOINTS = (
    Endpoint("GET", "/oauth/authorize", "authorize"),
    Endpoint("POST", "/oauth/token", "token"),
    Endpoint("POST", f"{CONTROL_PREFIX}/config", "config"),
    Endpoint("POST", f"{CONTROL_PREFIX}/orders", "seed"),
    Endpoint("GET", f"{API_PREFIX}/orders", "list_orders"),
    Endpoint("GET", f"{API_PREFIX}/orders/<int:order_id>", "get_order"),
    Endpoint("PUT", f"{API_PREFIX}/orders/<int:order_id>", "update_order"),
)


def _invalid_grant(message: str) -> tuple[Response, int]:
    return jsonify({"error": "invalid_grant", "message": message}), 400


def _new_order(st: OrdersPlatformState, row: Any) -> OrderRecord | str:
    if not isinstance(row, dict):
        return "each order must be an object"
    status = row.get("status", "paid")
    customer = row.get("customer")
    if status not in ORDER_STATUSES or not isinstance(customer, dict):
        return f"status one of {ORDER_STATUSES} and a customer object are required"
    if "@" not in str(customer.get("email", "")):
        return "customer.email is required"
    try:
        total = Decimal(str(row.get("total", "0")))
    except InvalidOperation:
        return "total must be a decimal amount"
    with st.lock:
        order_id = st.next_id()
        now = st.clock()
        order = OrderRecord(
            id=order_id,
            status=str(status),
            total=total,
            currency=str(row.get("currency") or "EUR"),
            customer={
                "id": int(customer.get("id") or 1000 + order_id),
                "email": str(customer["email"]),
                "first_name": str(customer.get("first_name") or ""),
                "last_name": str(customer.get("last_name") or ""),
            },
            created_at=now,
            updated_at=now,
        )
        st.orders[order_id] = order
    return order


def _laravel_page(rows: list[OrderRecord], page: int, per_page: int) -> dict[str, Any]:
    """The seed's response object (providers.md 5.1)."""
    total = len(rows)
    last = max(1, -(-total // per_page))
    window = rows[(page - 1) * per_page : page * per_page]
    path = request.base_url

    def url(number: int) -> str:
        query = {k: v for k, v in request.args.items() if k != "page"}
        query["page"] = str(number)
        return f"{path}?{urlencode(query)}"

    return {
        "total": total,
        "per_page": per_page,
        "current_page": page,
        "last_page": last,
        "first_page_url": url(1),
        "last_page_url": url(last),
        "next_page_url": url(page + 1) if page < last else None,
        "prev_page_url": url(page - 1) if page > 1 else None,
        "path": path,
        "from": (page - 1) * per_page + 1 if window else None,
        "to": (page - 1) * per_page + len(window) if window else None,
        "data": [_order_json(o) for o in window],
    }
