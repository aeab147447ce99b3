"""Fixtures for the edge: the app from the factory, a test client, and signed requests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from tests.webhooks.serving import gunicorn_server
from webhooks import create_app
from worker.config import Settings
from worker.signing import sign

_DROP = object()


def coniq_event(event_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid Coniq reward.issued event (a fresh id unless given)."""
    event: dict[str, Any] = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": "reward.issued",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme-mall",
        "data": {
            "customer": {
                "id": 4711,
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
            },
            "subscription": {"id": 99, "program_id": 7},
            "reward": {
                "id": "rw_1",
                "offer_id": 1001,
                "name": "10 USD gift card",
                "expiry_date": "2027-01-31",
            },
        },
    }
    event.update(overrides)
    return event


def internal_event(event_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid internal reward.granted event: two lines, three units."""
    event: dict[str, Any] = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": "reward.granted",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme-mall",
        "data": {
            "recipient": {
                "email": "grace@example.com",
                "first_name": "Grace",
                "last_name": "Hopper",
            },
            "rewards": [
                {"reward_code": "GIFT10", "quantity": 2},
                {"provider": "rewardops", "product": "12/tok-gift-25"},
            ],
            "reference": "campaign-42",
        },
    }
    event.update(overrides)
    return event


def signed_post(
    client: FlaskClient,
    path: str,
    body: Any,
    secret: str | None = None,
    **overrides: Any,
) -> TestResponse:
    """POST ``body`` (dict → JSON, or raw bytes) signed like a real sender would.

    ``secret`` defaults to the app's first secret for the path's source. ``overrides``:
    ``msg_id`` (default: the body's ``id``), ``timestamp`` (default: now), ``signature``
    (replaces the computed header), ``content_type``, and ``headers`` (merged last; a
    value of None removes that header).
    """
    settings: Settings = client.application.extensions["rewardrelay"].settings
    if secret is None:
        secrets = settings.coniq_webhook_secrets if "coniq" in path else settings.event_secrets
        secret = secrets[0]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id = overrides.pop("msg_id", None)
    if msg_id is None:
        msg_id = body.get("id", "msg_x") if isinstance(body, dict) else "msg_x"
    timestamp = overrides.pop("timestamp", int(time.time()))
    signature = overrides.pop("signature", None) or sign(raw, secret, str(msg_id), timestamp)
    headers: dict[str, Any] = {
        "Content-Type": overrides.pop("content_type", "application/json"),
        "webhook-id": str(msg_id),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    headers.update(overrides.pop("headers", {}))
    if overrides:
        raise TypeError(f"unknown overrides: {sorted(overrides)}")
    # Flask's test client: pass every header explicitly, and drop the None ones.
    sent = {name: value for name, value in headers.items() if value is not None}
    content_type = sent.pop("Content-Type", None)
    return client.post(path, data=raw, headers=sent, content_type=content_type)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    application.config.update(TESTING=True)
    yield application
    application.extensions["rewardrelay"].redis.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(name="signed_post", scope="session")
def signed_post_fixture() -> Any:
    """``signed_post`` as a fixture, so test modules need not import this conftest."""
    return signed_post


@pytest.fixture(name="coniq_event", scope="session")
def coniq_event_fixture() -> Any:
    return coniq_event


@pytest.fixture(name="internal_event", scope="session")
def internal_event_fixture() -> Any:
    return internal_event


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The app behind a real HTTP server (werkzeug's, threaded) on a free loopback port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture
def gunicorn_url(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """The receiver as production serves it: gunicorn with gunicorn.conf.py and its
    worker class (``EdgeWorker``); the log is ``tmp_path / "gunicorn.log"``."""
    env = {
        "REDIS_URL": settings.redis_url,
        "KEY_PREFIX": settings.key_prefix,
        "CONIQ_WEBHOOK_SECRETS": settings.coniq_webhook_secrets[0],
        "EVENT_SECRETS": settings.event_secrets[0],
        "ADMIN_TOKEN": settings.admin_token,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    with gunicorn_server(env, tmp_path / "gunicorn.log") as url:
        yield url
