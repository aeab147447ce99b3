"""Inbox: the edge's single atomic write (event, units, schedule and outbox entries).

One Lua script claims the event id, stores the event and its units, indexes the units as
live, and appends them to the outbox stream, all in one Redis round trip. After it
returns ``ACCEPTED`` the event is durable (as durable as the Redis persistence settings)
and the relay or the sweeper will publish its tasks, even if this process dies now.

The accept script goes through a ``ScriptWriter`` (group commit): calls made at the same
moment by several threads of one process share a round trip, each still atomic. The
relay's end of the outbox (read, claim, acknowledge, take due) is :mod:`worker.stores.outbox`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from worker.stores.codec import text, text_map
from worker.stores.group_commit import ScriptWriter
from worker.stores.keys import Keys
from worker.stores.models import UnitSpec

__all__ = ["Inbox", "InboxOutcome", "StoredEvent"]

_ACCEPT = """
local event_key, outbox, live, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, source, etype, fp, body = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, stale_at, unit_ids, n = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local marker, closing = KEYS[5 + n], KEYS[6 + n]
local subjects, m = ARGV[10 + 2 * n], tonumber(ARGV[11 + 2 * n])
local seen = redis.call('HMGET', event_key, 'source', 'fingerprint', 'undispatched')
if not seen[2] then
  -- The event's data may have expired (retention): its dedupe marker still answers.
  local mark = redis.call('GET', marker)
  if mark then
    local s, f = string.match(mark, '^(%S+) (%S+)')
    seen = {s, f, '0'}
  end
end
if seen[2] then
  -- A marker keeps the fingerprint's first 128 bits: compare as many as it kept.
  if seen[1] ~= source or seen[2] ~= string.sub(fp, 1, #seen[2]) then return 'conflict' end
  if tonumber(seen[3] or '0') > 0 then return 'pending' end
  return 'duplicate'
end
redis.call('HSET', event_key, 'id', id, 'source', source, 'type', etype, 'fingerprint', fp,
  'body', body, 'received_at', now, 'units', unit_ids, 'undispatched', n)
redis.call('ZADD', index, now, id)
for i = 1, n do
  local uid, match = ARGV[8 + 2 * i], ARGV[9 + 2 * i]
  redis.call('HSET', KEYS[4 + i], 'event_id', id, 'source', source, 'event_type', etype,
    'state', 'pending', 'attempts', 0, 'match', match, 'created_at', now, 'updated_at', now)
  redis.call('ZADD', live, stale_at, uid)
  redis.call('XADD', outbox, '*', 'unit', uid)
end
if m > 0 then
  -- Who the event is about (keyed hashes), for erasure; the index lives while the
  -- customer has an event whose data is kept (retention sets its expiry).
  redis.call('HSET', event_key, 'subjects', subjects)
  for j = 1, m do
    redis.call('SADD', KEYS[6 + n + j], id)
    redis.call('PERSIST', KEYS[6 + n + j])
  end
end
-- Nothing to fulfil: the event is finished as soon as it is recorded.
if n == 0 then redis.call('SADD', closing, id) end
return 'accepted'
"""


class InboxOutcome(enum.StrEnum):
    ACCEPTED = "accepted"  # new event stored and queued in the outbox
    PENDING = "pending"  # seen before, same body, not yet published: answer "accepted" again
    DUPLICATE = "duplicate"  # seen before, same body, already published
    CONFLICT = "conflict"  # same id, different source or body


@dataclass(frozen=True)
class StoredEvent:
    id: str
    source: str
    type: str
    received_at: float
    unit_ids: tuple[str, ...]
    body: dict[str, object]


class Inbox:
    """Claims event ids and records accepted events with their units."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, wait_replicas: int = 0, wait_timeout_ms: int = 0
    ) -> None:
        """``wait_replicas`` > 0: ``accept`` returns only once that many replicas have the
        write (``STORE_WAIT_REPLICAS``), else raises ``ReplicaTimeout``."""
        self._redis = client
        self._keys = keys
        self._accept = ScriptWriter(
            client, _ACCEPT, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms
        )

    def accept(
        self,
        *,
        event_id: str,
        source: str,
        event_type: str,
        fingerprint: str,
        body: str,
        units: Sequence[UnitSpec],
        now: float,
        stale_after: float,
        subjects: Sequence[str] = (),
    ) -> InboxOutcome:
        """Atomically claim ``(source, event_id)`` and store the event and its units.

        ``subjects`` are the keyed hashes of the customers the event is about
        (``personal_data``); the event joins each one's erasure index. An id whose event
        expired under retention is still claimed, by its dedupe marker.

        Raises:
            ReplicaTimeout: too few replicas acknowledged in time (a ``RedisError``); the
                event may be stored on the primary, and a retry is deduplicated.
            redis.RedisError: the store is unreachable, or (``ReplicaTimeout``) the write was
                not confirmed by enough replicas; the event may or may not be stored, and
                a retry of the same id is safe either way.
        """
        unit_ids = [spec.unit_id(event_id) for spec in units]
        keys = [self._keys.event(event_id), self._keys.outbox, self._keys.live]
        keys += [self._keys.events_index] + [self._keys.unit(uid) for uid in unit_ids]
        keys += [self._keys.seen(event_id), self._keys.closing]
        keys += [self._keys.subject(digest) for digest in subjects]
        args: list[str | float | int] = [
            event_id,
            source,
            event_type,
            fingerprint,
            body,
            now,
            now + stale_after,
            json.dumps(unit_ids),
            len(unit_ids),
        ]
        for uid, spec in zip(unit_ids, units, strict=True):
            args += [uid, json.dumps(spec.match, sort_keys=True)]
        args += [" ".join(subjects), len(subjects)]
        result = self._accept(keys=keys, args=args)
        return InboxOutcome(text(result))

    def get(self, event_id: str) -> StoredEvent | None:
        raw = self._redis.hgetall(self._keys.event(event_id))
        if not raw:
            return None
        data = text_map(raw)
        return StoredEvent(
            id=data["id"],
            source=data["source"],
            type=data["type"],
            received_at=float(data["received_at"]),
            unit_ids=tuple(json.loads(data["units"])),
            body=json.loads(data["body"]),
        )
