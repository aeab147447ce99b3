"""The minimal receiver: what a careful hand-written edge does, and nothing more.

A Flask view that verifies the Standard Webhooks v1 signature (HMAC-SHA256 over
``{id}.{timestamp}.{body}``, timestamp within 5 minutes), then in one pipelined round
trip ``SET NX`` the webhook id (dedupe, 1 day) and ``XADD`` the body to a stream, and
answers 202 (200 for a duplicate). No schema validation, no units, no outbox script: the
floor our edge is measured against (``python -m bench.ingest``, target ``minimal``).
Configured by environment: ``BENCH_REDIS_URL``, ``BENCH_PREFIX``, ``BENCH_SECRET``
(a ``whsec_`` secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import Any

import redis
from flask import Flask, Response, jsonify, request

__all__ = ["create_app"]

TOLERANCE_SECONDS = 300
DEDUPE_SECONDS = 86_400


def create_app() -> Flask:
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    prefix = os.environ.get("BENCH_PREFIX", "minimal")
    key = base64.b64decode(os.environ["BENCH_SECRET"].removeprefix("whsec_"))
    stream = f"{prefix}:stream"
    app = Flask(__name__)

    @app.post("/events")
    def receive() -> tuple[Response, int]:
        body = request.get_data()
        webhook_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "").split()
        if not webhook_id or not timestamp.isdigit():
            return jsonify(error="signature-missing"), 401
        if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            return jsonify(error="timestamp-out-of-tolerance"), 401
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if not any(
            hmac.compare_digest(entry.partition(",")[2], expected)
            for entry in signatures
            if entry.startswith("v1,")
        ):
            return jsonify(error="signature-invalid"), 401
        pipe = client.pipeline(transaction=False)
        pipe.set(f"{prefix}:seen:{webhook_id}", 1, nx=True, ex=DEDUPE_SECONDS)
        pipe.xadd(stream, {"id": webhook_id, "body": body})
        first, _ = pipe.execute()
        if not first:
            return jsonify(status="duplicate"), 200
        return jsonify(status="accepted"), 202

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
