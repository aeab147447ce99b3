"""The naive baseline for ``python -m bench.e2e``: no verification, dedupe or ledger.

* web: a Flask view that calls ``fulfil.delay(body)`` and answers 202
  (``gunicorn 'bench.e2e.naive:create_app()'``);
* worker: ``celery -A bench.e2e.naive worker``: ``fulfil`` makes one plain httpx POST to
  the Ifeelgoods sandbox (create-and-redeem, a fresh ``order_id`` every time, so a
  redelivered task would issue a second reward), then records when it finished;
  ``noop`` only counts (the broker-only baseline).

Environment: ``BENCH_BROKER_URL`` (broker and the completion records, a db of the
benchmark's own), ``BENCH_QUEUE``, ``BENCH_RUN`` (names the completion keys),
``BENCH_SANDBOX_URL``, ``IFEELGOODS_API_KEY``, ``IFEELGOODS_API_SECRET``.
Celery settings: the product's delivery settings (late ack, prefetch 1, task events; see
``SHARED_SETTINGS``) unless ``BENCH_CELERY_SETTINGS=defaults`` (early ack, prefetch 4,
no events).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

import httpx
import redis
from celery import Celery
from flask import Flask, Response, jsonify, request

__all__ = [
    "FULFIL_TASK",
    "NOOP_TASK",
    "baseline_conf",
    "celery",
    "count_key",
    "create_app",
    "done_key",
]

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/10")
QUEUE = os.environ.get("BENCH_QUEUE", "bench-e2e-naive")
RUN = os.environ.get("BENCH_RUN", "local")
FULFIL_TASK = "bench.e2e.naive.fulfil"
NOOP_TASK = "bench.e2e.naive.noop"

# Which Celery settings the baselines run with: "ours" (default) copies the product's
# delivery settings from worker.celery_app.make_celery, so the comparison measures the
# pipeline and not a Celery configuration; "defaults" leaves Celery's defaults.
CELERY_SETTINGS = os.environ.get("BENCH_CELERY_SETTINGS", "ours")
# The product settings that change how a worker takes, runs and acknowledges tasks.
SHARED_SETTINGS = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "task_acks_on_failure_or_timeout",
    "worker_prefetch_multiplier",
    "worker_cancel_long_running_tasks_on_connection_loss",
    "worker_send_task_events",
    "task_send_sent_event",
    "task_track_started",
    "broker_transport_options",
    "broker_pool_limit",
    "task_publish_retry_policy",
)


def baseline_conf(broker_url: str, mode: str = CELERY_SETTINGS) -> dict[str, Any]:
    """Celery settings of the baselines' apps (worker and publisher)."""
    conf: dict[str, Any] = {
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if mode == "ours":
        from worker.celery_app import make_celery
        from worker.config import Settings

        ours = make_celery(Settings(redis_url=broker_url, broker_url=broker_url)).conf
        conf.update({name: ours[name] for name in SHARED_SETTINGS})
    return conf


celery = Celery("bench_naive", broker=BROKER_URL)
celery.conf.update(baseline_conf(BROKER_URL))


def done_key(run: str = RUN) -> str:
    """Hash: event id → wall-clock time the naive task finished."""
    return f"bench-e2e:{run}:done"


def count_key(run: str = RUN) -> str:
    """Counter: no-op tasks executed."""
    return f"bench-e2e:{run}:noop"


_local = threading.local()


def _clients() -> tuple[httpx.Client, redis.Redis]:
    # Built on first use in each prefork child (after the fork), then reused.
    if not hasattr(_local, "http"):
        _local.http = httpx.Client(
            timeout=10.0,
            headers={
                "Api-Key": os.environ.get("IFEELGOODS_API_KEY", ""),
                "Api-Secret": os.environ.get("IFEELGOODS_API_SECRET", ""),
            },
        )
        _local.redis = redis.Redis.from_url(BROKER_URL)
    return _local.http, _local.redis


@celery.task(name=FULFIL_TASK)  # type: ignore[untyped-decorator]
def fulfil(body: str) -> None:
    event = json.loads(body)
    person = event["data"]["recipient"]
    http, store = _clients()
    base = os.environ["BENCH_SANDBOX_URL"]
    response = http.post(
        f"{base}/fulfillment/v2/promotions/1/rewards/APP-ITU-10USD-US/redemptions/actions/redeem",
        json={"data": {"order_id": uuid.uuid4().hex, "user": {"email": person["email"]}}},
    )
    response.raise_for_status()
    store.hset(done_key(), event["id"], time.time())


@celery.task(name=NOOP_TASK)  # type: ignore[untyped-decorator]
def noop() -> None:
    _clients()[1].incr(count_key())


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/events")
    def receive() -> tuple[Response, int]:
        fulfil.delay(request.get_data(as_text=True))
        return jsonify(status="accepted"), 202

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
