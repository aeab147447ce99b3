"""``GET /metrics``: Prometheus text exposition for the whole deployment.

The samples come from ``worker.metrics``: in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)
every gunicorn worker and Celery child writes to a shared directory and this endpoint
sums them, so one scrape of any web worker shows the edge and the workers together. The
store gauges (dead letters waiting, live units) are read from Redis at scrape time.
Unauthenticated like the probes: it holds counts only, no ids, no personal data.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response

from webhooks import health
from webhooks.context import edge_context
from worker import metrics
from worker.stores.dead_letters import DeadLetters
from worker.stores.lanes import LaneStore

__all__ = ["bp"]

bp = Blueprint("prometheus", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    ctx = edge_context()
    letters = DeadLetters(ctx.redis, ctx.keys)
    store = metrics.StoreCollector(
        dead_letters_waiting=letters.waiting_count,
        live_units=lambda: int(ctx.redis.zcard(ctx.keys.live)),
    )
    lanes = LaneStore(ctx.redis, ctx.keys)
    lane_gauges = metrics.LaneCollector(
        views=lambda: [lanes.view(name) for name in lanes.names()], now=time.time
    )
    broker = metrics.UpCollector(
        "rewardrelay_broker_up",
        "The broker accepted a connection at scrape time.",
        lambda: health.broker_status() == "ok",
    )
    return Response(
        metrics.render(store, lane_gauges, broker),
        mimetype=None,
        content_type=metrics.CONTENT_TYPE,
    )
