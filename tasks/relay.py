"""The relay stage: from the store to the broker (``rewardrelay relay`` and beat's sweep).

The edge only writes to Redis (event, units and outbox entries in one Lua script). Two
paths then publish ``tasks.fulfill_reward(unit_id)``:
- the relay reads the outbox stream the edge appends to, publishes, and acknowledges an
  entry only after its publish succeeded (an entry read but never acknowledged is claimed
  again by ``reclaim_outbox``: the autoclaim);
- the scheduler takes units whose ``live`` score is due (a retry time, a delivery to
  follow up, or a unit silent for too long, e.g. because its message was lost) and
  publishes them, pushing their score forward in the same atomic step so two schedulers
  never take the same unit.
Both publish in batches (``Publisher``): on Redis, kombu's ``Producer.batch`` sends a
batch's messages and task-sent events in one pipeline. Publishing twice is harmless (the
ledger lets only one delivery submit), so a batch that fails is left to be published again
whole, and several relays may run.

:func:`run_relay` is the loop of the ``rewardrelay relay`` process. A Redis or broker
outage does not stop it: it logs, waits a second and carries on, and whatever was not
published is still in the outbox or the schedule. The store side (stream reads, claims,
acknowledgements, the due-unit script) is :mod:`worker.stores.outbox`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

import redis
from celery import Celery
from kombu.exceptions import KombuError

from worker.celery_app import FULFIL_TASK, make_celery
from worker.config import Settings
from worker.redis_connect import redis_client
from worker.stores.keys import Keys
from worker.stores.models import UnitId
from worker.stores.outbox import RELAY_GROUP, Outbox, OutboxEntry

__all__ = [
    "DUE_INTERVAL_SECONDS",
    "RECLAIM_INTERVAL_SECONDS",
    "RELAY_BLOCK_MS",
    "RELAY_GROUP",
    "Dispatcher",
    "Publisher",
    "celery_publisher",
    "run_relay",
    "sweep_once",
]

log = logging.getLogger(__name__)

# Hands one fulfilment task per unit id to the broker and returns once all were handed
# over. When it raises, any of them may or may not have been published: the caller
# treats the whole batch as unpublished (publishing again is harmless).
Publisher = Callable[[Sequence[str]], None]

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


def celery_publisher(app: Celery) -> Publisher:
    """Publish ``tasks.fulfill_reward(unit_id)`` for a batch through one producer.

    On Redis, ``Producer.batch`` (kombu 5.7+) buffers each task message and its task-sent
    event in one pipeline, flushed once: one round trip and one client per batch, where a
    plain ``send_task`` builds a Redis client and makes a round trip for each message and
    each event (the relay's largest cost under load, bench.e2e profile). Transports
    without batching (RabbitMQ) publish each message at once, confirms included.

    The queue is declared with the first message of a batch only: kombu caches
    declarations per channel, but checking that cache copies and binds the queue for
    every message. ``argsrepr`` (what Flower shows) is the unit id, written directly
    rather than through Celery's ``saferepr``.
    """

    def publish(unit_ids: Sequence[str]) -> None:
        if not unit_ids:
            return
        with app.producer_or_acquire() as producer, producer.batch():
            for n, unit_id in enumerate(unit_ids):
                app.send_task(
                    FULFIL_TASK,
                    args=[unit_id],
                    producer=producer,
                    declare=None if n == 0 else [],
                    argsrepr=repr([unit_id]),
                )

    return publish


class Dispatcher:
    """Publishes from the outbox (new and stale entries) and from the schedule (due units)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        publish: Publisher,
        *,
        stale_after: float,
        consumer: str | None = None,
    ) -> None:
        self._outbox = Outbox(client, keys)
        self._publish = publish
        self._stale_after = stale_after
        self._consumer = consumer or f"{socket.gethostname()}-{id(self):x}"

    def ensure_group(self) -> None:
        self._outbox.ensure_group()

    def relay_once(self, *, block_ms: int = 1000, count: int = 100) -> int:
        """Publish new outbox entries; returns how many were published."""
        entries = self._outbox.read_new(self._consumer, block_ms=block_ms, count=count)
        return self._publish_entries(entries)

    def reclaim_outbox(self, *, min_idle_ms: int = 10_000, count: int = 100) -> int:
        """Publish entries another relay read but never acknowledged (it crashed)."""
        self.ensure_group()
        entries = self._outbox.claim_stale(self._consumer, min_idle_ms=min_idle_ms, count=count)
        return self._publish_entries(entries)

    def publish_due(self, *, now: float | None = None, limit: int = 500) -> int:
        """Publish units whose next check is due; returns how many."""
        now = time.time() if now is None else now
        unit_ids = self._outbox.take_due(now=now, until=now + self._stale_after, limit=limit)
        if not unit_ids:
            return 0
        try:
            self._publish(unit_ids)
        except Exception:
            # Their scores were pushed forward: the next sweep after stale_after retries them.
            log.warning("publish failed for %d due units; will retry", len(unit_ids), exc_info=True)
            return 0
        self._outbox.mark_dispatched(unit_ids, now)
        _log_published(unit_ids, "due")
        return len(unit_ids)

    def _publish_entries(self, entries: list[OutboxEntry]) -> int:
        """Publish the entries' units as one batch, then settle them in one round trip.

        Entries are acknowledged only after the whole batch was handed to the broker. If
        publishing raises, every entry stays pending in the stream, to be claimed again
        (``reclaim_outbox``) and published again.
        """
        published = [entry for entry in entries if entry.unit_id is not None]
        empty = [entry.entry_id for entry in entries if entry.unit_id is None]
        unit_ids = [entry.unit_id for entry in published if entry.unit_id is not None]
        self._publish(unit_ids)
        self._outbox.settle(published, empty, time.time())
        _log_published(unit_ids, "outbox")
        return len(published)


def _log_published(unit_ids: Sequence[str], origin: str) -> None:
    """DEBUG: one line per publish, carrying the ids a search follows (no payload)."""
    if log.isEnabledFor(logging.DEBUG):
        for unit_id in unit_ids:
            log.debug(
                "published unit from the %s",
                origin,
                extra={"unit_id": unit_id, "event_id": UnitId.parse(unit_id).event_id},
            )


def sweep_once(app: Celery, client: redis.Redis, keys: Keys, settings: Settings) -> tuple[int, int]:
    """Beat's sweep: re-publish outbox entries a relay left behind, then every due unit.

    Returns (entries reclaimed, due units published).
    """
    dispatcher = Dispatcher(
        client,
        keys,
        celery_publisher(app),
        stale_after=settings.unit_stale_seconds,
        consumer="sweeper",
    )
    reclaimed = dispatcher.reclaim_outbox(min_idle_ms=int(settings.unit_stale_seconds * 1000))
    return reclaimed, dispatcher.publish_due()


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
    client = redis_client(
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
