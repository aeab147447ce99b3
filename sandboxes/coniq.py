"""Sandboxes, Coniq: a local simulator of the Coniq Platform API 2.0 parts we call (providers.md 3).

Stage: test and demo infrastructure shipped with the package. rewardrelay records each
fulfilled Coniq reward back in Coniq (the loop back, issue 6); this sandbox lets that path
run and fail on demand without a Coniq account.

Implemented: the observed authentication (3.2 [PUB S7]) — ``Authorization: ApiKey
key="<key>"`` plus ``x-api-version: 2.0`` on every call; missing/invalid key → 401
``{"error": "Unauthorized"}``, unknown version → 400 — and plain JSON bodies without an
envelope (3.3).

[DESIGN] (Coniq publishes no such endpoint; 3.6 proposes carrying our idempotency key in
``external_reference``): recording a delivered reward::

    POST /reward/{reward_id}/fulfilment
      {"external_reference": "<ours, unique>", "customer_id", "subscription_id"?,
       "provider", "provider_reference", "fulfilled_at"}
    → 201 {"id", "reward_id", "external_reference", "customer_id", "subscription_id",
           "provider", "provider_reference", "fulfilled_at", "status": "recorded"}
    → 200 the same body when the external_reference was recorded before for this reward
    → 409 {"error": "..."} when it was recorded for another reward
    GET /reward/{reward_id}/fulfilment → JSON array of the records for that reward

Control API: the shared ``/_sandbox`` endpoints (see :mod:`sandboxes`); ``issued`` counts
records created per ``external_reference`` (never replays).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request

from sandboxes.base import SandboxState, install

__all__ = ["ConiqState", "create_app"]

API_VERSION = "2.0"
_API_KEY_HEADER = re.compile(r'^ApiKey\s+key="([^"]*)"$')
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
class FulfilmentRecord:
    id: int
    reward_id: str
    body: dict[str, Any]


class ConiqState(SandboxState):
    """Fulfilment records in memory, keyed by our ``external_reference``."""

    def __init__(self, *, seed: int | None = 0) -> None:
        super().__init__(seed=seed)
        self.records: dict[str, FulfilmentRecord] = {}
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

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> Response:
        return _error(404, None, "Not Found")

    @app.errorhandler(405)
    def _not_allowed(_exc: Exception) -> Response:
        return _error(405, None, "Method Not Allowed")

    @app.before_request
    def _authenticate() -> Response | None:
        if request.path.startswith("/_sandbox"):
            return None
        match = _API_KEY_HEADER.match(request.headers.get("Authorization", "").strip())
        if match is None or not secrets.compare_digest(match.group(1), key):
            return _error(401, None, "Unauthorized")
        if request.headers.get("x-api-version", "").strip() != API_VERSION:
            return _error(400, None, f"Unsupported x-api-version; use {API_VERSION}")
        return None

    @app.post("/reward/<reward_id>/fulfilment")
    def _record(reward_id: str) -> tuple[Response, int] | Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, None, "Body must be a JSON object")
        reference = body.get("external_reference")
        customer = body.get("customer_id")
        if not isinstance(reference, str) or not reference or not customer:
            return _error(422, None, "external_reference and customer_id are required")
        with st.lock:
            existing = st.records.get(reference)
            if existing is not None:
                if existing.reward_id != reward_id:
                    return _error(409, None, "external_reference already used for another reward")
                return jsonify(existing.body), 200
            record_id = st.next_id()
            stored = {
                "id": record_id,
                "reward_id": reward_id,
                "external_reference": reference,
                "customer_id": str(customer),
                "subscription_id": body.get("subscription_id"),
                "provider": body.get("provider"),
                "provider_reference": body.get("provider_reference"),
                "fulfilled_at": body.get("fulfilled_at"),
                "status": "recorded",
            }
            st.records[reference] = FulfilmentRecord(record_id, reward_id, stored)
            st.record_issue(reference)
            return jsonify(stored), 201

    @app.get("/reward/<reward_id>/fulfilment")
    def _list(reward_id: str) -> Response:
        with st.lock:
            rows = [r.body for r in st.records.values() if r.reward_id == reward_id]
        return jsonify(sorted(rows, key=lambda row: int(row["id"])))

    return app
