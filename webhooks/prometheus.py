"""``GET /metrics``: Prometheus text exposition for the whole deployment.

The samples come from ``worker.metrics``: in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)
every gunicorn worker and Celery child writes to a shared directory and this endpoint
sums them, so one scrape of any web worker shows the edge and the workers together. The
store gauges (dead letters waiting, live units) are read from Redis at scrape time.
Unauthenticated like the probes: it holds counts only, no ids, no personal data.
"""

from __future__ import annotations

from flask import Blueprint, Response

from webhooks.context import edge_context
from worker import metrics
from worker.stores.dead_letters import DeadLetters

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
    return Response(metrics.render(store), mimetype=None, content_type=metrics.CONTENT_TYPE)


def _describe() -> None:
    from webhooks import openapi

    openapi.PATHS["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (text exposition format), all processes summed",
            "tags": ["operations"],
            "description": "Counters and histograms from every web and worker process when "
            "PROMETHEUS_MULTIPROC_DIR is set (each process's own otherwise), plus gauges "
            "read from Redis at scrape time: rewardrelay_events_{received,accepted,"
            "duplicate,rejected}_total, rewardrelay_units_terminal_total, "
            "rewardrelay_provider_call_seconds, rewardrelay_retries_total, "
            "rewardrelay_unit_pickup_delay_seconds, rewardrelay_dead_letters_waiting, "
            "rewardrelay_units_live, rewardrelay_store_up.",
            "responses": {
                "200": {
                    "description": "The exposition.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }


_describe()
