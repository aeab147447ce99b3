"""Beat: close finished events (their data then expires on its own) and prune bookkeeping.

Stage: data lifecycle (worker side). Closing is driven by a queue, not a scan: the ledger,
the dead-letter store and the inbox add an event id to ``closing`` when a unit of it
finishes for good, and each run closes what is queued (``Retention.close_waiting``): one
atomic script per event sets the expiry of everything it owns and writes its dedupe
marker. Then a bounded slice of the events not yet closed is queued again (events accepted
before retention existed are closed that way) and one of the sources' bookkeeping pruned.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Task, shared_task

from tasks.bookkeeping import prune
from tasks.runtime import WorkerRuntime, runtime
from worker.celery_app import RETENTION_TASK
from worker.stores.retention import CloseResult, Retention, RetentionPolicy

__all__ = ["CLOSE_BATCH", "close_finished", "run_retention"]

log = logging.getLogger(__name__)

CLOSE_BATCH = 1_000  # events closed per run at most; the rest wait for the next run
# What close_waiting counts as closed by this run (the others were open, gone or done).
CLOSED_NOW = frozenset(result.name.lower() for result in CloseResult if result.closed_now)
REQUEUE_BATCH = 200  # not-yet-closed events re-checked per run (those from before retention)


def run_retention(rt: WorkerRuntime, *, now: float | None = None) -> dict[str, Any]:
    """One run: close queued events, prune one slice; counts (no personal data)."""
    now = time.time() if now is None else now
    retention = Retention(rt.redis, rt.keys, RetentionPolicy.from_settings(rt.settings))
    report: dict[str, Any] = {}
    try:
        report["closed"] = retention.close_waiting(now=now, limit=CLOSE_BATCH)
        report["requeued"] = retention.requeue_slice(limit=REQUEUE_BATCH)
        report["pruned"] = prune(rt.redis, rt.keys)
    except redis.RedisError as exc:
        report["stopped"] = f"redis: {type(exc).__name__}"
        log.warning("retention stopped early: %s", report["stopped"])
    closed = {name: n for name, n in report.get("closed", {}).items() if name in CLOSED_NOW}
    if closed or report.get("pruned"):  # a run that only looked at open events is routine
        log.info("retention run: closed=%s pruned=%s", closed, report.get("pruned", {}))
    return report


@shared_task(  # type: ignore[untyped-decorator]
    # No task events: a run every few seconds would fill Flower's task list (as the sweep).
    name=RETENTION_TASK,
    bind=True,
    ignore_result=True,
    send_events=False,
)
def close_finished(self: Task) -> dict[str, Any]:
    """Beat: start the retention period of finished events; keep bookkeeping bounded."""
    return run_retention(runtime(self))
