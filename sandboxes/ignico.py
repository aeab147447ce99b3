"""Sandboxes, Ignico: a local simulator of the Ignico REST API v1 (providers.md section 4).

Stage: test and demo infrastructure shipped with the package, so the Ignico payout source
runs without a workspace and its token refresh, page walk and settle paths can be tested
against a real HTTP server. Implements the client-credentials token endpoint (4.2, 48 h
tokens, form-encoded), JSON:API 1.0 envelopes (4.3), ``filter[...]``, ``sort`` and
``page[number]``/``page[size]`` (4.4), users and wallet transactions (4.5) with guarded
state transitions (4.6 [DESIGN]: realized/cancelled are terminal, a PUT on a terminal
transaction answers 409). JSON:API rules enforced: writes sent as
``application/vnd.api+json`` without media type parameters (415), an ``Accept`` that allows
it (406), ``data.type`` present (400) and naming the collection (409); wallet transactions
need ``user``, ``type``, ``amount`` and ``description`` (422).

[DESIGN] parts (not published by Ignico): the ``meta.page`` key names and ``links`` (4.4),
the JSON:API error body (4.3), ``include=user`` on wallet transactions (the public client
uses ``include=performer`` on actions), and ``cancellationReason`` accepted with
``cancelled: true``.

Control API: the shared ``/_sandbox`` endpoints (see :mod:`sandboxes`) plus
``POST /_sandbox/payouts`` ``{"payouts": [{"email", "amount"?, "first_name"?,
"last_name"?}]}`` to seed pending payouts (users created as needed; returns them). ``issued`` counts
``realized:<transaction id>`` and ``cancelled:<transaction id>`` transitions, so tests can
prove each payout was settled exactly once.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any

from flask import Flask, Response, jsonify, request

from sandboxes.base import (
    CONTROL_PREFIX,
    Endpoint,
    SandboxState,
    accepts,
    install,
    register_endpoints,
)

__all__ = ["ENDPOINTS", "IgnicoApi", "IgnicoState", "create_app"]

API_PREFIX = "/api/v1"
TOKEN_PATH = f"{API_PREFIX}/oauth2/token"
TOKEN_TTL_SECONDS = 172_800  # providers.md 4.2 [PUB S9]: 48 h tokens
DEFAULT_PAGE_SIZE = 25  # providers.md 4.4 [SEED 000]
MAX_PAGE_SIZE = 100  # [DESIGN] "maximum page size may be limited"
JSONAPI = "application/vnd.api+json"
_TRANSACTION_FILTERS = {"id", "cancelled", "realized", "type", "currency", "amount"}
_TRANSACTION_SORTS = {"id", "cancelled", "realized", "type", "currency", "amount", "addedAt"}
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    406: "Not Acceptable",
    409: "Conflict",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class UserRecord:
    id: int
    email: str
    country: str
    first_name: str
    last_name: str
    referral_code: str


@dataclass
class TransactionRecord:
    id: int
    user_id: int
    type: str
    amount: Decimal
    currency: str
    description: str
    added_at: float
    realized: bool = False
    cancelled: bool = False
    realized_at: float | None = None
    cancelled_at: float | None = None
    cancellation_reason: str | None = field(default=None)


class IgnicoState(SandboxState):
    """Users and wallet transactions in memory (ids are increasing integers)."""

    def __init__(self, *, seed: int | None = 0) -> None:
        super().__init__(seed=seed)
        self.users: dict[int, UserRecord] = {}
        self.transactions: dict[int, TransactionRecord] = {}
        self._next_id = 1
        self._id_lock = threading.Lock()

    def _reset_data(self) -> None:
        self.users.clear()
        self.transactions.clear()

    def next_id(self) -> int:
        with self._id_lock:
            value = self._next_id
            self._next_id += 1
            return value

    def user_by_email(self, email: str) -> UserRecord | None:
        return next((u for u in self.users.values() if u.email == email.lower()), None)


def _stamp(epoch: float | None) -> str | None:
    """providers.md 4.4: ``YYYY-MM-DD hh:mm:ss`` (24 h, UTC here)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _error(status: int, name: str | None = None, message: str | None = None) -> Response:
    """providers.md 4.3 [DESIGN]: a JSON:API ``errors`` document."""
    entry: dict[str, Any] = {
        "status": str(status),
        "title": _TITLES.get(status, "Error"),
        "detail": message or _TITLES.get(status, "Error"),
    }
    if name:
        entry["code"] = name
    response = jsonify({"errors": [entry]})
    response.status_code = status
    response.content_type = JSONAPI
    return response


def _document(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.content_type = JSONAPI
    return response


def _user_json(user: UserRecord) -> dict[str, Any]:
    return {
        "type": "user",
        "id": str(user.id),
        "attributes": {
            "id": user.id,
            "email": user.email,
            "country": user.country,
            "referralCode": user.referral_code,
            "subject": {"person": {"firstName": user.first_name, "lastName": user.last_name}},
        },
    }


def _transaction_json(tx: TransactionRecord) -> dict[str, Any]:
    return {
        "type": "transaction",
        "id": str(tx.id),
        "attributes": {
            "id": tx.id,
            "type": tx.type,
            "amount": f"{tx.amount:.2f}",
            "currency": tx.currency,
            "description": tx.description,
            "realized": tx.realized,
            "cancelled": tx.cancelled,
            "addedAt": _stamp(tx.added_at),
            "realizedAt": _stamp(tx.realized_at),
            "cancelledAt": _stamp(tx.cancelled_at),
            "cancellationReason": tx.cancellation_reason,
        },
        "relationships": {"user": {"data": {"type": "user", "id": str(tx.user_id)}}},
    }


def _flag(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    return None


def _page_args() -> tuple[int, int] | Response:
    try:
        number = int(request.args.get("page[number]", "1"))
        size = int(request.args.get("page[size]", str(DEFAULT_PAGE_SIZE)))
    except ValueError:
        return _error(400, "invalid_page", "page[number] and page[size] must be integers")
    if number < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        return _error(400, "invalid_page", f"page[size] must be 1..{MAX_PAGE_SIZE}")
    return number, size


def create_app(
    state: IgnicoState | None = None,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> Flask:
    """Build the Ignico sandbox (paths under ``/api/v1``).

    Credentials default to ``IGNICO_CLIENT_ID``/``IGNICO_CLIENT_SECRET`` from the
    environment, else ``sandbox-ignico``/``sandbox-ignico-secret``. The state is exposed
    as ``app.extensions["sandbox_state"]``.
    """
    cid = client_id or os.environ.get("IGNICO_CLIENT_ID") or "sandbox-ignico"
    csecret = client_secret or os.environ.get("IGNICO_CLIENT_SECRET") or "sandbox-ignico-secret"
    st = state if state is not None else IgnicoState()
    app = Flask("sandboxes.ignico")
    app.extensions["sandbox_state"] = st
    install(app, st, _error)
    api = IgnicoApi(st, cid, csecret)
    app.register_error_handler(404, api.not_found)
    app.register_error_handler(405, api.not_found)
    app.before_request(api.authenticate)
    app.before_request(api.media_type)
    register_endpoints(app, api, ENDPOINTS)
    return app


class IgnicoApi:
    """The sandbox's request handlers, one method per endpoint of :data:`ENDPOINTS`."""

    def __init__(self, state: IgnicoState, client_id: str, client_secret: str) -> None:
        self.st = state
        self._client_id = client_id
        self._client_secret = client_secret

    def not_found(self, _exc: Exception) -> Response:
        return _error(404, "not_found", "The resource does not exist.")

    def authenticate(self) -> Response | None:
        """providers.md 4.2 [SEED 000]: every endpoint but the token one needs a Bearer."""
        if not request.path.startswith(API_PREFIX) or request.path == TOKEN_PATH:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        status = self.st.token_status(token.strip()) if scheme.lower() == "bearer" else "unknown"
        if status == "valid":
            return None
        # providers.md 4.2 [PUB S9] names only the token 401 body; resources answer JSON:API.
        detail = "The access token expired." if status == "expired" else "Unauthenticated."
        return _error(401, "unauthorized", detail)

    def media_type(self) -> Response | None:
        """providers.md 4.3 (JSON:API 1.0): writes are sent as ``application/vnd.api+json``
        without media type parameters (else 415); ``Accept`` must allow it (else 406)."""
        if not request.path.startswith(API_PREFIX) or request.path == TOKEN_PATH:
            return None
        if request.method in ("POST", "PUT", "PATCH"):
            if request.mimetype != JSONAPI:
                return _error(415, "unsupported_media_type", f"Content-Type must be {JSONAPI}.")
            if request.mimetype_params:
                return _error(
                    415, "unsupported_media_type", f"{JSONAPI} takes no media type parameters."
                )
        if not accepts(request.headers.get("Accept"), (JSONAPI,)):
            return _error(406, "not_acceptable", f"Accept must allow {JSONAPI}.")
        return None

    def token(self) -> Response | tuple[Response, int]:
        """providers.md 4.2: form-encoded client credentials, the only grant type."""
        form = request.form
        valid = secrets.compare_digest(form.get("client_id", ""), self._client_id) and (
            secrets.compare_digest(form.get("client_secret", ""), self._client_secret)
        )
        if not valid:
            return jsonify(
                {"error": "invalid_client", "message": "Client authentication failed"}
            ), 401
        if form.get("grant_type") != "client_credentials":
            return jsonify(
                {"error": "unsupported_grant_type", "message": "Use client_credentials."}
            ), 400
        token, _created = self.st.mint_token(TOKEN_TTL_SECONDS)
        return jsonify(
            {"token_type": "Bearer", "expires_in": TOKEN_TTL_SECONDS, "access_token": token}
        )

    def create_user(self) -> Response:
        """providers.md 4.5: ``email`` and ``country`` (ISO alpha-2) are required."""
        attributes = _attributes("user")
        if isinstance(attributes, Response):
            return attributes
        email = str(attributes.get("email") or "").strip().lower()
        country = str(attributes.get("country") or "")
        if "@" not in email or len(country) != 2:
            return _error(422, "invalid_user", "email and country (ISO alpha-2) are required.")
        subject = attributes.get("subject") or {}
        person = subject.get("person") if isinstance(subject, dict) else None
        person = person if isinstance(person, dict) else {}
        with self.st.lock:
            if self.st.user_by_email(email) is not None:
                return _error(422, "email_taken", "The email has already been taken.")
            user = self._add_user(
                email, country.upper(), person.get("firstName"), person.get("lastName")
            )
            return _document({"data": _user_json(user)})

    def _add_user(self, email: str, country: str, first: Any, last: Any) -> UserRecord:
        """Store a new user (caller holds the lock)."""
        user = UserRecord(
            id=self.st.next_id(),
            email=email,
            country=country,
            first_name=str(first or ""),
            last_name=str(last or ""),
            referral_code=secrets.token_hex(4),
        )
        self.st.users[user.id] = user
        return user

    def get_user(self, user_id: int) -> Response:
        with self.st.lock:
            user = self.st.users.get(user_id)
            if user is None:
                return _error(404, "not_found", "User not found.")
            return _document({"data": _user_json(user)})

    def create_transaction(self) -> Response:
        """providers.md 4.5: ``{user: {email}|{referralCode}, type, amount, description}``."""
        attributes = _attributes("transaction")
        if isinstance(attributes, Response):
            return attributes
        kind = attributes.get("type")
        try:
            amount = Decimal(str(attributes.get("amount")))
        except InvalidOperation:
            return _error(422, "invalid_amount", "amount must be a decimal number.")
        if kind not in ("add", "sub") or not amount.is_finite() or amount <= 0:
            return _error(422, "invalid_transaction", "type add|sub and a positive amount.")
        description = attributes.get("description")
        if not isinstance(description, str) or not description.strip():
            return _error(422, "invalid_transaction", "description is required.")
        with self.st.lock:
            user = self._referenced_user(attributes.get("user"))
            if user is None:
                return _error(422, "invalid_user", "user must name an existing user.")
            tx = TransactionRecord(
                id=self.st.next_id(),
                user_id=user.id,
                type=str(kind),
                amount=amount,
                currency=str(attributes.get("currency") or "EUR").upper(),
                description=description,
                added_at=self.st.clock(),
                realized=bool(attributes.get("realized", False)),
            )
            self.st.transactions[tx.id] = tx
            return _document({"data": _transaction_json(tx)})

    def _referenced_user(self, ref: Any) -> UserRecord | None:
        """``{email}`` or ``{referralCode}`` of an existing user (caller holds the lock)."""
        if isinstance(ref, dict) and ref.get("email"):
            return self.st.user_by_email(str(ref["email"]))
        if isinstance(ref, dict) and ref.get("referralCode"):
            code = str(ref["referralCode"])
            return next((u for u in self.st.users.values() if u.referral_code == code), None)
        return None

    def list_transactions(self) -> Response:
        """providers.md 4.4 filters and sorts for wallet transactions; ``include=user``."""
        paging = _page_args()
        if isinstance(paging, Response):
            return paging
        number, size = paging
        with self.st.lock:
            rows = _select(list(self.st.transactions.values()))
        if isinstance(rows, Response):
            return rows
        total = len(rows)
        last = max(1, -(-total // size))
        window = rows[(number - 1) * size : number * size]
        document: dict[str, Any] = {
            "data": [_transaction_json(tx) for tx in window],
            "meta": {"page": _page_meta(number, size, len(window), total, last)},
            "links": _links(number, size, last),
        }
        if "user" in request.args.get("include", "").split(","):
            with self.st.lock:
                ids = sorted({tx.user_id for tx in window})
                document["included"] = [
                    _user_json(self.st.users[i]) for i in ids if i in self.st.users
                ]
        return _document(document)

    def seed_payouts(self) -> tuple[Response, int] | Response:
        """Demo and test seeding: pending payouts (``sub``, not realized) for emails."""
        body = request.get_json(silent=True)
        rows = body.get("payouts") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and "@" in str(r.get("email", "")) for r in rows
        ):
            return jsonify({"error": "body must be {payouts: [{email, amount?}]}"}), 400
        created = []
        with self.st.lock:
            for row in rows:
                email = str(row["email"]).strip().lower()
                user = self.st.user_by_email(email) or self._add_user(
                    email, "GB", row.get("first_name"), row.get("last_name")
                )
                try:
                    amount = Decimal(str(row.get("amount", "10")))
                except InvalidOperation:
                    return jsonify({"error": "amount must be a decimal number"}), 400
                tx = TransactionRecord(
                    id=self.st.next_id(),
                    user_id=user.id,
                    type="sub",
                    amount=amount,
                    currency="EUR",
                    description="payout",
                    added_at=self.st.clock(),
                )
                self.st.transactions[tx.id] = tx
                created.append(_transaction_json(tx))
        return jsonify({"payouts": created})

    def get_transaction(self, tx_id: int) -> Response:
        with self.st.lock:
            tx = self.st.transactions.get(tx_id)
            if tx is None:
                return _error(404, "not_found", "Transaction not found.")
            return _document({"data": _transaction_json(tx)})

    def update_transaction(self, tx_id: int) -> Response:
        """Realize ``{realized: true}`` or cancel ``{cancelled: true}``; terminal → 409."""
        attributes = _attributes("transaction")
        if isinstance(attributes, Response):
            return attributes
        realize = attributes.get("realized") is True
        cancel = attributes.get("cancelled") is True
        if realize == cancel:
            return _error(422, "invalid_transition", "Send realized: true or cancelled: true.")
        with self.st.lock:
            tx = self.st.transactions.get(tx_id)
            if tx is None:
                return _error(404, "not_found", "Transaction not found.")
            if tx.realized or tx.cancelled:
                current = "realized" if tx.realized else "cancelled"
                return _error(409, "transaction_closed", f"The transaction is already {current}.")
            now = self.st.clock()
            if realize:
                tx.realized, tx.realized_at = True, now
                self.st.record_issue(f"realized:{tx.id}")
            else:
                reason = attributes.get("cancellationReason")
                tx.cancelled, tx.cancelled_at = True, now
                tx.cancellation_reason = str(reason)[:200] if reason else None
                self.st.record_issue(f"cancelled:{tx.id}")
            return _document({"data": _transaction_json(tx)})


_TRANSACTIONS = f"{API_PREFIX}/users/wallets/transactions"
ENDPOINTS = (
    Endpoint("POST", TOKEN_PATH, "token"),
    Endpoint("POST", f"{API_PREFIX}/users", "create_user"),
    Endpoint("GET", f"{API_PREFIX}/users/<int:user_id>", "get_user"),
    Endpoint("POST", _TRANSACTIONS, "create_transaction"),
    Endpoint("GET", _TRANSACTIONS, "list_transactions"),
    Endpoint("POST", f"{CONTROL_PREFIX}/payouts", "seed_payouts"),
    Endpoint("GET", f"{_TRANSACTIONS}/<int:tx_id>", "get_transaction"),
    Endpoint("PUT", f"{_TRANSACTIONS}/<int:tx_id>", "update_transaction"),
)


def _attributes(resource_type: str) -> dict[str, Any] | Response:
    """``data.attributes`` of a JSON:API request document whose ``data.type`` names the
    collection: missing → 400, another type → 409 (JSON:API 1.0, creating resources)."""
    body = request.get_json(silent=True, force=True)
    data = body.get("data") if isinstance(body, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(attributes, dict):
        return _error(400, "bad_request", "Body must be {data: {type, attributes}}.")
    if "type" not in data:
        return _error(400, "bad_request", "data.type is required.")
    if data["type"] != resource_type:
        return _error(409, "type_mismatch", f"data.type must be {resource_type!r}.")
    return attributes


def _select(rows: list[TransactionRecord]) -> list[TransactionRecord] | Response:
    """Apply the request's ``filter[...]`` and ``sort`` (providers.md 4.4)."""
    for key, value in request.args.items():
        if not key.startswith("filter["):
            continue
        filtered = _filter(rows, key[len("filter[") : -1], value)
        if isinstance(filtered, Response):
            return filtered
        rows = filtered
    sort = request.args.get("sort", "id")
    for spec in reversed([s for s in sort.split(",") if s]):
        name = spec.lstrip("-")
        if name not in _TRANSACTION_SORTS:
            return _error(400, "invalid_sort", f"Unknown sort field {name!r}.")
        attribute = "added_at" if name == "addedAt" else name
        rows.sort(key=attrgetter(attribute), reverse=spec.startswith("-"))
    return rows


def _page_meta(number: int, size: int, shown: int, total: int, last: int) -> dict[str, Any]:
    """providers.md 4.4 [DESIGN] ``meta.page`` keys."""
    return {
        "current-page": number,
        "per-page": size,
        "from": (number - 1) * size + 1 if shown else None,
        "to": (number - 1) * size + shown if shown else None,
        "total": total,
        "last-page": last,
    }


def _filter(
    rows: list[TransactionRecord], name: str, value: str
) -> list[TransactionRecord] | Response:
    """One ``filter[name]=value`` (providers.md 4.4 wallet-transaction filters)."""
    if name in ("realized", "cancelled"):
        flag = _flag(value)
        if flag is None:
            return _error(400, "invalid_filter", f"filter[{name}] must be 0 or 1.")
        return [tx for tx in rows if getattr(tx, name) is flag]
    if name in ("addedAtGreaterEqual", "addedAtLessEqual"):
        try:
            bound = datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return _error(400, "invalid_filter", f"filter[{name}] must be YYYY-MM-DD hh:mm:ss.")
        if name == "addedAtGreaterEqual":
            return [tx for tx in rows if int(tx.added_at) >= bound]
        return [tx for tx in rows if int(tx.added_at) <= bound]
    if name not in _TRANSACTION_FILTERS:
        return _error(400, "invalid_filter", f"Unknown filter {name!r}.")
    if name == "id":
        return [tx for tx in rows if str(tx.id) == value]
    if name == "amount":
        return [tx for tx in rows if f"{tx.amount:.2f}" == value or str(tx.amount) == value]
    if name == "currency":
        return [tx for tx in rows if tx.currency == value.upper()]
    return [tx for tx in rows if tx.type == value]


def _links(number: int, size: int, last: int) -> dict[str, str | None]:
    base = f"{request.base_url}?page[size]={size}&page[number]="
    return {
        "first": f"{base}1",
        "prev": f"{base}{number - 1}" if number > 1 else None,
        "next": f"{base}{number + 1}" if number < last else None,
        "last": f"{base}{last}",
    }
