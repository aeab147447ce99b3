"""Dispatch: from the store to the broker.

Two paths publish ``tasks.fulfill_reward(unit_id)``:
- the relay reads the outbox stream the edge appends to, publishes, and acknowledges an
  entry only after its publish succeeded (an entry read but never acknowledged is claimed
  again by ``reclaim_outbox``);
- the scheduler takes units whose ``live`` score is due (a retry time, a delivery to
  follow up, or a unit silent for too long, e.g. because its message was lost) and
  publishes them, pushing their score forward in the same atomic step so two schedulers
  never take the same unit.
Both publish in batches (``Publisher``): on Redis, kombu's ``Producer.batch`` sends a
batch's messages and task-sent events in one pipeline. Publishing twice is harmless (the
ledger lets only one delivery submit), so a batch that fails is left to be published again
whole.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import Celery

from worker.celery_app import FULFILL_TASK
from worker.stores.codec import text
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys

__all__ = ["Dispatcher", "Publisher", "RELAY_GROUP", "celery_publisher"]

log = logging.getLogger(__name__)
RELAY_GROUP = "relay"

# Hands one fulfilment task per unit id to the broker and returns once all were handed
# over. When it raises, any of them may or may not have been published: the caller
# treats the whole batch as unpublished (publishing again is harmless).
Publisher = Callable[[Sequence[str]], None]


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
                    FULFILL_TASK,
                    args=[unit_id],
                    producer=producer,
                    declare=None if n == 0 else [],
                    argsrepr=repr([unit_id]),
                )

    return publish


_TAKE_DUE = """
local live, now, until_, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', live, '-inf', now, 'LIMIT', 0, limit)
for _, uid in ipairs(due) do redis.call('ZADD', live, 'XX', until_, uid) end
return due
"""


class Dispatcher:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        publish: Publisher,
        *,
        stale_after: float,
        consumer: str | None = None,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._inbox = Inbox(client, keys)
        self._publish = publish
        self._stale_after = stale_after
        self._consumer = consumer or f"{socket.gethostname()}-{id(self):x}"
        self._take_due = client.register_script(_TAKE_DUE)

    def ensure_group(self) -> None:
        try:
            self._redis.xgroup_create(self._keys.outbox, RELAY_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def relay_once(self, *, block_ms: int = 1000, count: int = 100) -> int:
        """Publish new outbox entries; returns how many were published."""
        reply: Any = self._redis.xreadgroup(
            RELAY_GROUP, self._consumer, {self._keys.outbox: ">"}, count=count, block=block_ms
        )
        entries = [entry for _stream, items in (reply or []) for entry in items]
        return self._publish_entries(entries)

    def reclaim_outbox(self, *, min_idle_ms: int = 10_000, count: int = 100) -> int:
        """Publish entries another relay read but never acknowledged (it crashed)."""
        self.ensure_group()
        reply: Any = self._redis.xautoclaim(
            self._keys.outbox, RELAY_GROUP, self._consumer, min_idle_ms, count=count
        )
        return self._publish_entries(list(reply[1]))

    def publish_due(self, *, now: float | None = None, limit: int = 500) -> int:
        """Publish units whose next check is due; returns how many."""
        now = time.time() if now is None else now
        due = self._take_due(keys=[self._keys.live], args=[now, now + self._stale_after, limit])
        unit_ids = [text(raw) for raw in due]
        if not unit_ids:
            return 0
        try:
            self._publish(unit_ids)
        except Exception:
            # Their scores were pushed forward: the next sweep after stale_after retries them.
            log.warning("publish failed for %d due units; will retry", len(unit_ids), exc_info=True)
            return 0
        pipe = self._redis.pipeline(transaction=False)
        self._mark_dispatched(pipe, unit_ids, now, origin="due")
        pipe.execute()
        return len(unit_ids)

    def _publish_entries(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        """Publish the entries' units as one batch, then settle them in one round trip.

        Entries are acknowledged only after the whole batch was handed to the broker. If
        publishing raises, every entry stays pending in the stream, to be claimed again
        (``reclaim_outbox``) and published again.
        """
        published: list[tuple[bytes, str]] = []
        empty: list[bytes] = []  # deleted entries reported by XAUTOCLAIM
        for entry_id, fields in entries:
            if fields:
                published.append((entry_id, text(fields[b"unit"])))
            else:
                empty.append(entry_id)
        self._publish([unit_id for _entry_id, unit_id in published])
        self._settle(published, empty)
        return len(published)

    def _settle(self, published: list[tuple[bytes, str]], empty: list[bytes]) -> None:
        """Mark the published units dispatched and acknowledge and delete their entries.

        One MULTI for the whole batch instead of two round trips per entry: the relay's
        per-unit Redis cost was a third of its time under load (bench.e2e profile).
        """
        if not published and not empty:
            return
        pipe = self._redis.pipeline(transaction=True)
        unit_ids = [unit_id for _entry_id, unit_id in published]
        self._mark_dispatched(pipe, unit_ids, time.time(), origin="outbox")
        done = [entry_id for entry_id, _unit_id in published]
        pipe.xack(self._keys.outbox, RELAY_GROUP, *done, *empty)
        if done:
            pipe.xdel(self._keys.outbox, *done)
        pipe.execute()

    def _mark_dispatched(
        self, pipe: redis.client.Pipeline, unit_ids: Sequence[str], now: float, *, origin: str
    ) -> None:
        """Queue on ``pipe`` the record that each unit's task was published."""
        for unit_id in unit_ids:
            self._inbox.mark_dispatched_in(pipe, unit_id, now)
            _log_published(unit_id, origin)


def _log_published(unit_id: str, origin: str) -> None:
    """DEBUG: one line per publish, carrying the ids a search follows (no payload)."""
    if log.isEnabledFor(logging.DEBUG):
        event_id = unit_id.rsplit(":", 2)[0]
        log.debug(
            "published unit from the %s", origin, extra={"unit_id": unit_id, "event_id": event_id}
        )
