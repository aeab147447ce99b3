"""The baseline: a Flask view that publishes the raw body as a Celery task and answers 202.

No signature check, no validation, no dedupe: the cheapest thing that "works", and what
the edge would be if it published to the broker directly. Configured by environment:
``BENCH_BROKER_URL`` and ``BENCH_QUEUE`` (a queue of its own, deleted after the run).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from flask import Flask, Response, jsonify, request

__all__ = ["create_app"]


def create_app() -> Flask:
    celery = Celery("naive", broker=os.environ["BENCH_BROKER_URL"])
    celery.conf.update(
        task_default_queue=os.environ.get("BENCH_QUEUE", "bench-naive"),
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_pool_limit=10,
    )

    @celery.task(name="bench.naive.ingest")  # type: ignore[untyped-decorator]
    def ingest(body: str) -> None:  # never consumed during the benchmark
        del body

    app = Flask(__name__)

    @app.post("/events")
    def receive() -> tuple[Response, int]:
        ingest.delay(request.get_data(as_text=True))
        return jsonify(status="accepted"), 202

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
