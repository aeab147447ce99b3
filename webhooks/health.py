"""Liveness and readiness probes.

``/healthz`` answers while the process can serve requests (no I/O, so a slow Redis never
gets a healthy process restarted). ``/readyz`` checks what ingest needs: the store (Redis
PING) and the broker the relay publishes to, each with a short timeout, and names what is
down, so a load balancer can take this instance out of rotation.

The broker check reuses one client per app (``webhooks.broker_probe.BrokerProbe``).
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, jsonify

from webhooks.context import edge_context
from webhooks.errors import ProblemError

__all__ = ["bp", "broker_status"]

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """200 ``{"redis": "ok", "broker": "ok"}``, or 503 ``not-ready`` naming what is down."""
    checks = {"redis": _redis_status(), "broker": broker_status()}
    down = sorted(name for name, status in checks.items() if status != "ok")
    if down:
        raise ProblemError(
            503,
            "not-ready",
            f"Unavailable: {', '.join(down)}.",
            errors=checks,
            headers={"Retry-After": "5"},
        )
    return jsonify(checks)


def _redis_status() -> str:
    try:
        edge_context().redis.ping()
    except redis.RedisError as exc:
        log.warning("readiness: redis %s", type(exc).__name__)
        return "unavailable"
    return "ok"


def broker_status() -> str:
    """``ok`` or ``unavailable`` (readiness, and ``rewardrelay_broker_up`` on /metrics)."""
    return edge_context().broker_probe.status()
