"""Dispatch: from the store to the broker.

Two paths publish ``tasks.fulfill_reward(unit_id)``:
- the relay reads the outbox stream the edge appends to, publishes, and acknowledges an
  entry only after its publish succeeded (an entry read but never acknowledged is claimed
  again by ``reclaim_outbox``);
- the scheduler takes units whose ``live`` score is due (a retry time, a delivery to
  follow up, or a unit silent for too long, e.g. because its message was lost) and
  publishes them, pushing their score forward in the same atomic step so two schedulers
  never take the same unit.
Publishing twice is harmless: the ledger lets only one delivery submit.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import redis

from worker.stores.codec import text
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys

__all__ = ["Dispatcher", "RELAY_GROUP"]

log = logging.getLogger(__name__)
RELAY_GROUP = "relay"

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
        publish: Callable[[str], None],
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
        published = 0
        for raw in due:
            unit_id = text(raw)
            try:
                self._publish(unit_id)
            except Exception:
                # Its score was pushed forward: the next sweep after stale_after retries it.
                log.warning(
                    "publish failed for a due unit; will retry",
                    exc_info=True,
                    extra={"unit_id": unit_id, "event_id": unit_id.rsplit(":", 2)[0]},
                )
                break
            self._inbox.mark_dispatched(unit_id, now)
            _log_published(unit_id, "due")
            published += 1
        return published

    def _publish_entries(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        """Publish each entry's unit, then settle the batch in one Redis round trip.

        An entry is acknowledged only after its publish succeeded. If a publish raises,
        the entries published before it are still settled, and it and the rest stay
        pending in the stream, to be claimed again (``reclaim_outbox``).
        """
        published: list[tuple[bytes, str]] = []
        empty: list[bytes] = []  # deleted entries reported by XAUTOCLAIM
        try:
            for entry_id, fields in entries:
                if not fields:
                    empty.append(entry_id)
                    continue
                unit_id = text(fields[b"unit"])
                self._publish(unit_id)
                published.append((entry_id, unit_id))
        finally:
            self._settle(published, empty)
        return len(published)

    def _settle(self, published: list[tuple[bytes, str]], empty: list[bytes]) -> None:
        """Mark the published units dispatched and acknowledge and delete their entries.

        One MULTI for the whole batch instead of two round trips per entry: the relay's
        per-unit Redis cost was a third of its time under load (bench.e2e profile).
        """
        if not published and not empty:
            return
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        for _entry_id, unit_id in published:
            self._inbox.mark_dispatched_in(pipe, unit_id, now)
            _log_published(unit_id, "outbox")
        done = [entry_id for entry_id, _unit_id in published]
        if done or empty:
            pipe.xack(self._keys.outbox, RELAY_GROUP, *done, *empty)
        if done:
            pipe.xdel(self._keys.outbox, *done)
        pipe.execute()


def _log_published(unit_id: str, origin: str) -> None:
    """DEBUG: one line per publish, carrying the ids a search follows (no payload)."""
    if log.isEnabledFor(logging.DEBUG):
        event_id = unit_id.rsplit(":", 2)[0]
        log.debug(
            "published unit from the %s", origin, extra={"unit_id": unit_id, "event_id": event_id}
        )
