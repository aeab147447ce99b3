"""Retention: a finished event's data expires; a compact dedupe marker outlives it.

Stage: after fulfilment (worker stores). The moment a unit finishes for good (FULFILLED,
IGNORED, or its dead letter discarded) the ledger script adds its event id to the
``closing`` set, and so does the inbox for an event with nothing to fulfil. ``close``
then checks, atomically, that every unit of the event is finished, and if so:

* sets Redis ``EXPIRE`` (``RETENTION_SECONDS``) on the event, its units, their attempt
  histories and dead letters: Redis deletes them on time, nothing scans for them;
* writes the dedupe marker ``{prefix}:seen:{id}`` = ``source fingerprint outcome`` (the
  fingerprint's first 128 bits: enough to tell another body, ~30 bytes less per event)
  with ``DEDUPE_RETENTION_SECONDS``: the inbox reads it when the event is gone, so a
  redelivery is still answered ``200 duplicate`` (same body) or ``422 id-conflict``
  (other body), never accepted as a new reward;
* removes the event from the indexes (accepted events, unroutable units) and lets each
  customer's erasure index expire with the last of their events' data.

A unit still waiting in the dead-letter store keeps its event open: dead letters are
never expired before an operator has handled them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from worker.config import Settings
from worker.stores.codec import text
from worker.stores.keys import Keys

__all__ = ["CloseResult", "Marker", "Retention", "RetentionPolicy", "stored_bytes"]

# KEYS: closing set. ARGV: event id, now, retention s, dedupe retention s, then the key
# prefixes of events, units, dead letters, subjects, the marker key, and the indexes.
_CLOSE = """
local MARKER_FP = 32  -- hex characters of the fingerprint a marker keeps (128 bits)
local closing = KEYS[1]
local id, now, keep, dedupe = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ev_p, unit_p, dlq_p, subj_p = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local marker, events_index, unroutable = ARGV[9], ARGV[10], ARGV[11]
redis.call('SREM', closing, id)
local ek = ev_p .. id
local ev = redis.call('HMGET', ek, 'units', 'source', 'fingerprint', 'closed_at', 'subjects')
if not ev[1] then return 'missing' end
if ev[4] then return 'closed' end
local units = cjson.decode(ev[1])
local outcome = 'f'
for _, uid in ipairs(units) do
  local state = redis.call('HGET', unit_p .. uid, 'state')
  if state == 'ignored' then
    if outcome == 'f' then outcome = 'c' end
  elseif state == 'dead_lettered' or state == 'unroutable' then
    if redis.call('HGET', dlq_p .. uid, 'status') ~= 'discarded' then return 'open' end
    outcome = 'd'
  elseif state ~= 'fulfilled' then
    return 'open'
  end
end
if #units == 0 then outcome = 'c' end
redis.call('HSET', ek, 'closed_at', now)
redis.call('EXPIRE', ek, keep)
for _, uid in ipairs(units) do
  redis.call('EXPIRE', unit_p .. uid, keep)
  redis.call('EXPIRE', unit_p .. uid .. ':attempts', keep)
  redis.call('EXPIRE', dlq_p .. uid, keep)
  redis.call('ZREM', unroutable, uid)
end
redis.call('ZREM', events_index, id)
redis.call('SET', marker, ev[2] .. ' ' .. string.sub(ev[3], 1, MARKER_FP) .. ' ' .. outcome,
  'EX', dedupe)
-- A customer's erasure index expires with the last of their events' data: while any
-- other event of theirs is still open it stays; ids of expired events are pruned.
for digest in string.gmatch(ev[5] or '', '%S+') do
  local sk = subj_p .. digest
  local open = false
  for _, other in ipairs(redis.call('SMEMBERS', sk)) do
    if other ~= id then
      local o = redis.call('HMGET', ev_p .. other, 'id', 'closed_at')
      if not o[1] then redis.call('SREM', sk, other)
      elseif not o[2] then open = true end
    end
  end
  if not open then redis.call('EXPIRE', sk, keep) end
end
return outcome
"""


class CloseResult(enum.StrEnum):
    """What ``close`` did with one event id."""

    FULFILLED = "f"  # closed: every unit fulfilled
    DISCARDED = "d"  # closed: some unit's dead letter was discarded by an operator
    CLOSED = "c"  # closed: nothing to fulfil, or ignored units
    OPEN = "open"  # some unit is still in progress or waiting as a dead letter
    ALREADY = "closed"  # closed before
    MISSING = "missing"  # no such event (expired, or never accepted)

    @property
    def closed_now(self) -> bool:
        return self in (CloseResult.FULFILLED, CloseResult.DISCARDED, CloseResult.CLOSED)


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a finished event's data, and then its dedupe marker, are kept (seconds)."""

    retention_seconds: int
    dedupe_retention_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(settings.retention_seconds, settings.dedupe_retention_seconds)


@dataclass(frozen=True)
class Marker:
    """What remains of an expired event: enough to deduplicate a redelivery."""

    source: str
    fingerprint: str
    outcome: CloseResult

    @classmethod
    def parse(cls, raw: str) -> Marker | None:
        parts = raw.split(" ")
        if len(parts) != 3:
            return None
        try:
            outcome = CloseResult(parts[2])
        except ValueError:
            return None
        return cls(parts[0], parts[1], outcome)


class Retention:
    """Closes finished events (expiry set once, by Redis) and reads dedupe markers."""

    def __init__(self, client: redis.Redis, keys: Keys, policy: RetentionPolicy) -> None:
        self._redis = client
        self._keys = keys
        self._policy = policy
        self._close = client.register_script(_CLOSE)

    def close(self, event_id: str, *, now: float, client: redis.Redis | None = None) -> CloseResult:
        """Close ``event_id`` if every unit is finished (atomic; see module docstring)."""
        return CloseResult(text(self._close_call(event_id, now, client or self._redis)))

    def _close_call(self, event_id: str, now: float, client: Any) -> Any:
        keys = self._keys
        return self._close(
            keys=[keys.closing],
            args=[
                event_id,
                now,
                self._policy.retention_seconds,
                self._policy.dedupe_retention_seconds,
                keys.event(""),
                keys.unit(""),
                keys.dead_letter(""),
                keys.subject(""),
                keys.seen(event_id),
                keys.events_index,
                keys.unroutable,
            ],
            client=client,
        )

    def close_waiting(self, *, now: float, limit: int = 500) -> dict[str, int]:
        """Close up to ``limit`` events queued in ``closing``, in one pipeline; counts by
        result. An id leaves the queue only inside the close script (at-least-once)."""
        ids = [text(raw) for raw in self._redis.srandmember(self._keys.closing, limit) or []]
        if not ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for event_id in ids:
            self._close_call(event_id, now, pipe)
        counts: dict[str, int] = {}
        for reply in pipe.execute():
            name = CloseResult(text(reply)).name.lower()
            counts[name] = counts.get(name, 0) + 1
        return counts

    def requeue_slice(self, *, limit: int = 500) -> int:
        """Queue the next ``limit`` events of the accepted-events index for closing.

        Closing removes an event from that index, so it holds the events not yet closed:
        those accepted before retention existed (which no unit will queue again) and those
        still in progress. Walking it a slice per run, by a cursor on the acceptance time
        that wraps at the end, closes the former; the latter just stay open.
        """
        cursors, name = self._keys.retention_cursors, "events-index"
        raw = self._redis.hget(cursors, name)
        after = f"({text(raw)}" if raw is not None else "-inf"
        found: list[Any] = list(
            self._redis.zrangebyscore(
                self._keys.events_index, after, "+inf", start=0, num=limit, withscores=True
            )
        )
        if not found:
            self._redis.hdel(cursors, name)
            return 0
        self._redis.sadd(self._keys.closing, *[text(member) for member, _ in found])
        if len(found) < limit:
            self._redis.hdel(cursors, name)  # the end: the next slice starts over
        else:
            self._redis.hset(cursors, name, repr(found[-1][1]))
        return len(found)

    def marker(self, event_id: str) -> Marker | None:
        raw = self._redis.get(self._keys.seen(event_id))
        return Marker.parse(text(raw)) if raw is not None else None


def stored_bytes(client: redis.Redis, keys: Iterable[str]) -> int:
    """The sum of ``MEMORY USAGE`` (all samples) over ``keys``; missing keys count 0."""
    pipe = client.pipeline(transaction=False)
    names = list(keys)
    for name in names:
        pipe.memory_usage(name, samples=0)
    return sum(int(size or 0) for size in pipe.execute())
