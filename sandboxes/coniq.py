"""Sandboxes, Coniq: a local simulator of the Coniq Platform API 2.0 parts we call (providers.md 3).

Stage: test and demo infrastructure shipped with the package. rewardrelay records each
fulfilled Coniq reward back in Coniq (the loop back, issue 6); this sandbox lets that path
run and fail on demand without a Coniq account.

Implemented: the observed authentication (3.2 [PUB S7]) — ``Authorization: ApiKey
key="<key>"`` plus ``x-api-version: 2.0`` on every call; missing/invalid key → 401
``{"error": "Unauthorized"}``, unknown version → 400 — and plain JSON bodies without an
envelope (3.3).

[DESIGN] (3.5: "assign a reward to a customer's program subscription" is described, its
path and body are not public; 3.6: Coniq has no idempotency key, so ours travels in
``external_reference`` and the simulator dedupes on it)::

    POST /subscription/{subscription_id}/reward
      {"offer_id": <reward offer>, "expiry_date": "YYYY-MM-DD"?, "external_reference": "<ours>"}
    → 201 {"id", "subscription_id", "offer_id", "barcode", "expiry_date", "status": "issued"}
    → 200 the same body when the external_reference was used before for this subscription
    → 409 {"error": "..."} when it was used for another subscription
    GET /subscription?customer_email=&offer_id= → a JSON array (3.3 [PUB S7]; empty here)

Control API: the shared ``/_sandbox`` endpoints (see :mod:`sandboxes`); ``issued`` counts
rewards assigned per ``external_reference`` (never replays).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request

from sandboxes.base import CONTROL_PREFIX, Endpoint, SandboxState, install, register_endpoints

__all__ = ["ENDPOINTS", "ConiqApi", "ConiqState", "create_app"]

API_VERSION = "2.0"
_API_KEY_HEADER = re.compile(r'^ApiKey\s+key="([^"]*)"$')
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class RewardRecord:
    id: int
    subscription_id: str
    body: dict[str, Any]


class ConiqState(SandboxState):
    """Assigned rewards in memory, keyed by our ``external_reference``."""

    def __init__(self, *, seed: int | None = 0) -> None:
        super().__init__(seed=seed)
        self.records: dict[str, RewardRecord] = {}
        self._next_id = 1

    def _reset_data(self) -> None:
        self.records.clear()

    def next_id(self) -> int:
        with self.lock:
            value = self._next_id
            self._next_id += 1
            return value


def _error(status: int, name: str | None = None, message: str | None = None) -> Response:
    """providers.md 3.3 [DESIGN]: ``{"error": "<message>"}``."""
    response = jsonify({"error": message or name or _REASONS.get(status, "Error")})
    response.status_code = status
    return response


def create_app(state: ConiqState | None = None, *, api_key: str | None = None) -> Flask:
    """Build the Coniq sandbox (paths at the root, like ``https://api.coniq.com/``).

    The key defaults to ``CONIQ_API_KEY`` from the environment, else ``sandbox-coniq-key``.
    The state is exposed as ``app.extensions["sandbox_state"]``.
    """
    key = api_key or os.environ.get("CONIQ_API_KEY") or "sandbox-coniq-key"
    st = state if state is not None else ConiqState()
    app = Flask("sandboxes.coniq")
    app.extensions["sandbox_state"] = st
    install(app, st, _error)
    api = ConiqApi(st, key)
    app.register_error_handler(404, api.not_found)
    app.register_error_handler(405, api.not_allowed)
    app.before_request(api.authenticate)
    register_endpoints(app, api, ENDPOINTS)
    return app


class ConiqApi:
    """The sandbox's request handlers, one method per endpoint of :data:`ENDPOINTS`."""

    def __init__(self, state: ConiqState, api_key: str) -> None:
        self.st = state
        self._key = api_key

    def not_found(self, _exc: Exception) -> Response:
        return _error(404, None, "Not Found")

    def not_allowed(self, _exc: Exception) -> Response:
        return _error(405, None, "Method Not Allowed")

    def authenticate(self) -> Response | None:
        """3.2 [PUB S7]: ``Authorization: ApiKey key="…"`` and ``x-api-version: 2.0``."""
        if request.path.startswith(CONTROL_PREFIX):
            return None
        match = _API_KEY_HEADER.match(request.headers.get("Authorization", "").strip())
        if match is None or not secrets.compare_digest(match.group(1), self._key):
            return _error(401, None, "Unauthorized")
        if request.headers.get("x-api-version", "").strip() != API_VERSION:
            return _error(400, None, f"Unsupported x-api-version; use {API_VERSION}")
        return None

    def assign(self, subscription_id: str) -> tuple[Response, int] | Response:
        """3.5 [DESIGN]: assign a reward; ``external_reference`` makes a replay answer 200."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, None, "Body must be a JSON object")
        reference = body.get("external_reference")
        offer_id = body.get("offer_id")
        expiry = body.get("expiry_date")
        if not isinstance(reference, str) or not reference or offer_id in (None, ""):
            return _error(422, None, "offer_id and external_reference are required")
        if expiry is not None and not _DATE.match(str(expiry)):
            return _error(422, None, "expiry_date must be YYYY-MM-DD")
        with self.st.lock:
            existing = self.st.records.get(reference)
            if existing is not None:
                if existing.subscription_id != subscription_id:
                    return _error(409, None, "external_reference already used elsewhere")
                return jsonify(existing.body), 200
            record_id = self.st.next_id()
            stored = {
                "id": record_id,
                "subscription_id": subscription_id,
                "offer_id": str(offer_id),
                "barcode": f"{secrets.randbelow(10**12):012d}",
                "expiry_date": expiry,
                "status": "issued",
            }
            self.st.records[reference] = RewardRecord(record_id, subscription_id, stored)
            self.st.record_issue(reference)
            return jsonify(stored), 201

    def subscriptions(self) -> Response:
        return jsonify([])


ENDPOINTS = (
    Endpoint("POST", "/subscription/<subscription_id>/reward", "assign"),
    Endpoint("GET", "/subscription", "subscriptions"),
)
