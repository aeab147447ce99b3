"""Sandboxes, shared plumbing: in-memory state, fault hooks and the ``/_sandbox`` control API.

Stage: test infrastructure shipped with the package. Both provider simulators keep their
data in a lock-protected in-memory state object, count what they issue (so tests can prove
"exactly one order per idempotency key"), and apply the fault rules of
:mod:`sandboxes.faults` in Flask request hooks. Keeping that here means each provider module
only describes its own endpoints, envelopes and error bodies.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from sandboxes.faults import Fault, FaultInjector, FaultKind, FaultSpecError, parse_rules

__all__ = [
    "CONTROL_PREFIX",
    "Endpoint",
    "ErrorResponder",
    "SandboxState",
    "accepts",
    "current_fault",
    "install",
    "register_endpoints",
]

CONTROL_PREFIX = "/_sandbox"  # control endpoints; never faulted, never authenticated
FAULT_HEADER = "X-Sandbox-Fault"  # one-off fault for the request that carries it


class ErrorResponder(Protocol):
    """Builds a provider-shaped error response (each provider has its own body format)."""

    def __call__(
        self, status: int, name: str | None = None, message: str | None = None
    ) -> Response: ...


class SandboxState:
    """State common to every sandbox: lock, counters, faults and bearer tokens.

    Subclasses add their resources and override :meth:`_reset_data`. Every mutation happens
    under ``lock`` (a re-entrant lock, so helpers may nest).

    A reset also abandons the requests a fault is holding back: a write delayed by a
    ``latency`` fault whose client gave up must not land in the state the next test starts
    from (it would count as an issue nobody made). Each request takes the current
    :meth:`epoch` when it starts; a reset ends that epoch and wakes every fault wait in it.
    """

    def __init__(self, *, seed: int | None = 0, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.faults = FaultInjector(seed)
        self._seed = seed
        self.issued: Counter[str] = Counter()
        self.requests = 0
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self._epoch = threading.Event()  # set once a reset ends the current epoch

    def epoch(self) -> threading.Event:
        """The current epoch: set by the next reset (hand it to :meth:`hold`)."""
        with self.lock:
            return self._epoch

    @staticmethod
    def hold(epoch: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for a fault; True when a reset ended ``epoch`` meanwhile."""
        return epoch.wait(seconds) if seconds > 0 else epoch.is_set()

    def reset(self) -> None:
        """Forget every resource, token, counter and fault rule; abandon held requests."""
        with self.lock:
            self._epoch.set()
            self._epoch = threading.Event()
            self.faults.reset(self._seed)
            self.issued.clear()
            self.requests = 0
            self.tokens.clear()
            self._reset_data()

    def _reset_data(self) -> None:
        """Hook for subclasses: drop provider resources."""

    def mint_token(self, ttl_seconds: int) -> tuple[str, int]:
        """Issue a bearer token; returns it with its creation time (epoch seconds)."""
        token = secrets.token_hex(32)
        created_at = int(self.clock())
        with self.lock:
            self.tokens[token] = created_at + ttl_seconds
        return token, created_at

    def token_status(self, token: str) -> str:
        """``valid``, ``expired`` or ``unknown``."""
        with self.lock:
            expiry = self.tokens.get(token)
        if expiry is None:
            return "unknown"
        return "valid" if self.clock() < expiry else "expired"

    def expire_tokens(self) -> int:
        with self.lock:
            now = self.clock()
            for token in self.tokens:
                self.tokens[token] = min(self.tokens[token], now - 1)
            return len(self.tokens)

    def record_issue(self, key: str) -> None:
        """Count one creation for an idempotency key (never called for replays)."""
        with self.lock:
            self.issued[key] += 1

    def counters(self) -> dict[str, Any]:
        with self.lock:
            return {
                "issued": dict(self.issued),
                "requests": self.requests,
                "faults_injected": dict(self.faults.injected),
            }


class Endpoint(NamedTuple):
    """One row of a sandbox's route table: HTTP method, URL rule and handler method name."""

    method: str
    rule: str
    handler: str


def register_endpoints(
    app: Flask | Blueprint, api: object, endpoints: tuple[Endpoint, ...]
) -> None:
    """Add each row of ``endpoints`` to ``app``, served by the same-named method of ``api``.

    A sandbox keeps its handlers as small methods of one object holding its state, and its
    routes as a table a reader can scan, instead of closures inside one long function.
    """
    for endpoint in endpoints:
        app.add_url_rule(
            endpoint.rule,
            endpoint=endpoint.handler,
            view_func=getattr(api, endpoint.handler),
            methods=[endpoint.method],
        )


def accepts(header: str | None, media_types: tuple[str, ...]) -> bool:
    """Whether an ``Accept`` header allows one of ``media_types`` (absent or blank: yes).

    Media type parameters are ignored (``application/json; pretty=true`` is JSON) and a
    range (``*/*``, ``application/*``) matches what it covers; ``q=0`` excludes.
    """
    if header is None or not header.strip():
        return True
    for value, quality in parse_accept_header(header, MIMEAccept):
        if quality <= 0:
            continue
        wanted = value.split(";", 1)[0].strip().lower()
        if wanted == "*/*" or wanted in media_types:
            return True
        if wanted.endswith("/*") and any(m.startswith(wanted[:-1]) for m in media_types):
            return True
    return False


def current_fault() -> Fault | None:
    """The fault chosen for the request being handled (or None)."""
    fault: Fault | None = g.get("sandbox_fault")
    return fault


def install(app: Flask, state: SandboxState, error: ErrorResponder) -> None:
    """Attach fault hooks and the ``/_sandbox`` control endpoints to ``app``.

    Register this before any authentication hook so faults apply even to unauthenticated
    requests (a ``token_expired`` fault must win over a valid token).
    """
    app.before_request(functools.partial(_apply_fault, state, error))
    app.after_request(functools.partial(_delay_after_commit, state))
    control = Blueprint("sandbox_control", __name__, url_prefix=CONTROL_PREFIX)
    register_endpoints(control, _ControlApi(state), CONTROL_ENDPOINTS)
    app.register_blueprint(control)


def _apply_fault(state: SandboxState, error: ErrorResponder) -> Response | None:
    """Before each provider request: count it, pick its fault and apply the early kinds."""
    if request.path.startswith(CONTROL_PREFIX):
        return None
    g.sandbox_epoch = state.epoch()
    with state.lock:
        state.requests += 1
    try:
        fault = state.faults.pick(request.method, request.path, request.headers.get(FAULT_HEADER))
    except FaultSpecError as exc:
        return error(400, "bad_request", f"{FAULT_HEADER}: {exc}")
    g.sandbox_fault = fault
    if fault is None:
        return None
    return _early_fault_response(state, fault, error)


def _early_fault_response(
    state: SandboxState, fault: Fault, error: ErrorResponder
) -> Response | None:
    """The answer a fault gives instead of the view, or None to let the view run."""
    if fault.kind is FaultKind.LATENCY:
        if state.hold(g.sandbox_epoch, fault.ms / 1000):
            # Reset while held: the view must not write into the next run's state.
            return error(503, None, "The sandbox was reset while this request was held.")
        return None
    if fault.kind is FaultKind.STATUS:
        if not fault.body:
            return Response(status=fault.status)
        return error(fault.status, None, "Injected server error.")
    if fault.kind is FaultKind.RATE_LIMIT:
        response = error(429, None, None)
        response.headers["Retry-After"] = fault.retry_after
        return response
    if fault.kind is FaultKind.TOKEN_EXPIRED:
        response = error(401, "unauthorized", "The access token expired.")
        response.headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token", error_description="The access token expired"'
        )
        return response
    if fault.kind is FaultKind.PERMANENT:
        return error(fault.status, fault.error, fault.message)
    # commit_then_timeout and precondition_race act later, inside or after the view.
    return None


def _delay_after_commit(state: SandboxState, response: Response) -> Response:
    fault = current_fault()
    if fault is not None and fault.kind is FaultKind.COMMIT_THEN_TIMEOUT:
        # The view has committed; answering late makes the client time out not knowing.
        # A reset ends the wait early (the write belonged to the state it cleared).
        state.hold(g.sandbox_epoch, fault.seconds)
    return response


class _ControlApi:
    """Handlers of the shared ``/_sandbox`` control endpoints (no authentication)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def reset(self) -> Response:
        self.state.reset()
        return jsonify({"status": "reset"})

    def counters(self) -> Response:
        return jsonify(self.state.counters())

    def list_faults(self) -> Response:
        return jsonify({"rules": self.state.faults.rules()})

    def set_faults(self) -> tuple[Response, int] | Response:
        try:
            rules, seed, append = parse_rules(request.get_json(silent=True))
        except FaultSpecError as exc:
            return jsonify({"error": str(exc)}), 400
        self.state.faults.set_rules(rules, seed=seed, append=append)
        return jsonify({"rules": self.state.faults.rules()})

    def clear_faults(self) -> Response:
        self.state.faults.clear()
        return jsonify({"rules": []})

    def expire_tokens(self) -> Response:
        return jsonify({"expired": self.state.expire_tokens()})


CONTROL_ENDPOINTS = (
    Endpoint("POST", "/reset", "reset"),
    Endpoint("GET", "/counters", "counters"),
    Endpoint("GET", "/faults", "list_faults"),
    Endpoint("POST", "/faults", "set_faults"),
    Endpoint("DELETE", "/faults", "clear_faults"),
    Endpoint("POST", "/tokens/expire", "expire_tokens"),
)
