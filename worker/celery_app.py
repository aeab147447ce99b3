"""The Celery application, configured for at-least-once delivery of idempotent tasks.

Tasks are safe to run twice because the ledger decides, atomically, whether a unit may be
submitted; so the broker is allowed to redeliver (late acks, reject on worker loss) and is
never trusted to hold long delays (retries are scheduled in the ledger, not as countdowns).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker.config import Settings
from worker.redis_url import broker_connection

__all__ = [
    "make_celery",
    "BROKER_VISIBILITY_TIMEOUT_SECONDS",
    "FULFIL_TASK",
    "SWEEP_TASK",
    "LANES_TICK_TASK",
    "POLL_IGNICO_TASK",
    "POLL_ORDERS_TASK",
    "DRAIN_CONIQ_TASK",
    "RETENTION_TASK",
]

# The registered name keeps its historical spelling: messages in flight, Flower and
# dashboards know the task by it. Our own names spell "fulfil".
FULFIL_TASK = "tasks.fulfill_reward"
SWEEP_TASK = "tasks.sweep"
LANES_TICK_TASK = "tasks.lanes.tick"
# Reward sources and the loop back to Coniq (issue 6), scheduled only when configured.
POLL_IGNICO_TASK = "tasks.sources.poll_ignico"
POLL_ORDERS_TASK = "tasks.sources.poll_orders_platform"
DRAIN_CONIQ_TASK = "tasks.sources.drain_coniq_outbound"
# Data lifecycle (issue 19): close finished events so their data expires.
RETENTION_TASK = "tasks.retention.close_finished"
TASK_MODULES = [
    "tasks.entrypoints",
    "tasks.sources.ignico",
    "tasks.sources.orders_platform",
    "tasks.sources.coniq_outbound",
    "tasks.lanes",
    "tasks.retention",
]
# Redis redelivers an unacked message after this long; every countdown we use is far
# below it (we use none for retries) and every task finishes well within it.
BROKER_VISIBILITY_TIMEOUT_SECONDS = 3600
# kombu's Redis transport with one publishing client per channel (worker/redis_transport.py).
REDIS_TRANSPORT = "worker.redis_transport:Transport"
# Broker connections beyond one per pool thread: the consumer's BRPOP, events, beat.
BROKER_SPARE_CONNECTIONS = 8


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app from one Settings; no broker connection is made here."""
    # A Sentinel URL becomes kombu's sentinel:// list plus master_name (worker.redis_connect).
    broker_url, sentinel_options = broker_connection(settings.celery_broker_url)
    app = Celery("rewardrelay", broker=broker_url, include=TASK_MODULES)
    transport_options: dict[str, Any] = {
        "visibility_timeout": BROKER_VISIBILITY_TIMEOUT_SECONDS,
        # Every pool thread acknowledges and sends task events through the channel's
        # pool: kombu's default of 10 connections raises "Too many connections" above it.
        "max_connections": settings.worker_concurrency + BROKER_SPARE_CONNECTIONS,
        **sentinel_options,
    }
    transport: str | None = None
    if settings.celery_broker_url.startswith("redis://"):
        transport = REDIS_TRANSPORT
    if settings.celery_broker_url.startswith(("amqp", "pyamqp")):
        # Publisher confirms: without them RabbitMQ may drop messages under resource alarms.
        transport_options = {"confirm_publish": True}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_prefetch_multiplier=1,
        # One queue per deployment sharing a broker (tests run several stacks at once).
        task_default_queue=settings.task_queue,
        broker_connection_retry_on_startup=True,
        broker_transport=transport,
        broker_transport_options=transport_options,
        # Celery prefers the CELERY_BROKER_URL variable over broker_url; a Sentinel URL
        # there is ours, not kombu's, so name the converted one where Celery looks first.
        broker_read_url=broker_url,
        broker_write_url=broker_url,
        broker_pool_limit=10,
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        # Fulfilment waits on providers (I/O), so the worker runs it on threads: many
        # calls in flight per process. The pool is a setting, not a -P flag: Celery
        # replaces "-P prefork" (its default) by this value. Time limits below apply to
        # prefork only; every attempt is bounded by its deadline (tasks.http.deadline).
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.worker_concurrency,
        # Floats: int() made both limits 3 s for a 4 s lease, leaving no soft-limit window.
        task_time_limit=settings.task_lease_seconds * 0.9,
        task_soft_time_limit=settings.task_lease_seconds * 0.8,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule=_beat_schedule(settings),
    )
    app.conf.rewardrelay_settings = settings
    return app


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The sweeper always; each source poller only when that source is configured."""
    schedule: dict[str, dict[str, Any]] = {
        "sweep-units": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_seconds},
        # Provider lanes (tasks/lanes.py): release waiting units, start due probes.
        "lanes-tick": {
            "task": LANES_TICK_TASK,
            "schedule": settings.lane_tick_seconds,
            "options": {"expires": settings.lane_tick_seconds},
        },
        "close-finished-events": {
            "task": RETENTION_TASK,
            "schedule": settings.sweep_interval_seconds,
            "options": {"expires": settings.sweep_interval_seconds},
        },
    }
    every = settings.source_poll_seconds
    # A poll that cannot start within one interval is superseded by the next one.
    options = {"expires": every}
    if settings.ignico_configured:
        schedule["poll-ignico"] = {"task": POLL_IGNICO_TASK, "schedule": every, "options": options}
    if settings.orders_configured:
        schedule["poll-orders-platform"] = {
            "task": POLL_ORDERS_TASK,
            "schedule": every,
            "options": options,
        }
    if settings.coniq_outbound_configured:
        schedule["drain-coniq-outbound"] = {
            "task": DRAIN_CONIQ_TASK,
            "schedule": every,
            "options": options,
        }
    return schedule
