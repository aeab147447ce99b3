"""The relay process (``rewardrelay relay``): outbox → broker, and due units → broker.

The edge only writes to Redis (event, units and outbox entries in one Lua script); this
loop publishes ``tasks.fulfill_reward(unit_id)`` for every new outbox entry and
acknowledges it only after the publish succeeded; it also publishes units whose retry or
follow-up time is due (the scheduler), and re-publishes outbox entries another relay read
but never acknowledged. Publishing twice is harmless, so several relays may run.

A Redis or broker outage does not stop it: it logs, waits a second and carries on, and
whatever was not published is still in the outbox or the schedule.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from kombu.exceptions import KombuError

from tasks.dispatch import Dispatcher, celery_publisher
from worker.celery_app import make_celery
from worker.config import Settings
from worker.stores.keys import Keys

__all__ = ["run_relay", "RELAY_BLOCK_MS", "DUE_INTERVAL_SECONDS", "RECLAIM_INTERVAL_SECONDS"]

log = logging.getLogger("rewardrelay.relay")

# Longest one XREADGROUP waits for new outbox entries (also bounds the stop latency).
RELAY_BLOCK_MS = 500
# How often due units (retries, follow-ups, silent units) are published.
DUE_INTERVAL_SECONDS = 0.25
# How often entries read but never acknowledged (a relay died) are claimed again.
RECLAIM_INTERVAL_SECONDS = 5.0
# Pause after a Redis or broker error before trying again.
ERROR_BACKOFF_SECONDS = 1.0
# Socket timeout for the relay's Redis connection: above the XREADGROUP block time.
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0

# What an outage of the store or the broker looks like from here. Kombu wraps broker
# failures in OperationalError (a KombuError); raw socket errors are OSError.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, KombuError, OSError)


def run_relay(
    settings: Settings,
    stop_event: threading.Event,
    *,
    block_ms: int = RELAY_BLOCK_MS,
    consumer: str | None = None,
) -> None:
    """Publish from the outbox and the schedule until ``stop_event`` is set.

    Raises:
        SettingsError: ``REDIS_URL`` is not set.
    """
    settings.require("REDIS_URL")
    app = make_celery(settings)
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=max(REDIS_SOCKET_TIMEOUT_SECONDS, block_ms / 1000 + 2),
        socket_connect_timeout=2.0,
        health_check_interval=30,
    )
    dispatcher = Dispatcher(
        client,
        Keys(settings.key_prefix),
        publish=celery_publisher(app),
        stale_after=settings.unit_stale_seconds,
        consumer=consumer,
    )
    log.info("relay started (outbox of prefix %r)", settings.key_prefix)
    group_ready = False
    next_due = 0.0
    next_reclaim = 0.0
    failing = False
    try:
        while not stop_event.is_set():
            try:
                if not group_ready:
                    dispatcher.ensure_group()
                    group_ready = True
                relayed = dispatcher.relay_once(block_ms=block_ms)
                now = time.monotonic()
                due = 0
                if now >= next_due:
                    due = dispatcher.publish_due()
                    next_due = now + DUE_INTERVAL_SECONDS
                reclaimed = 0
                if now >= next_reclaim:
                    reclaimed = dispatcher.reclaim_outbox()
                    next_reclaim = now + RECLAIM_INTERVAL_SECONDS
                if failing:
                    log.info("relay recovered")
                    failing = False
                if relayed or due or reclaimed:
                    log.debug("published new=%d due=%d reclaimed=%d", relayed, due, reclaimed)
            except _OUTAGE_ERRORS as exc:
                # The entries stay pending in the outbox (or due in the schedule): nothing
                # is lost by waiting. Log once per outage, not once per second.
                if not failing:
                    log.warning("relay paused: %s: %s", type(exc).__name__, exc)
                failing = True
                group_ready = False  # the stream may have been lost with the server
                stop_event.wait(ERROR_BACKOFF_SECONDS)
    finally:
        client.close()
        app.close()
        log.info("relay stopped")
