"""Refused source items: what a reward source could not hand over, for operators.

The reward sources (``tasks/sources``) keep, per source, the items that stopped for good:

source            kind            hash       id           retry puts it back on
ignico            refused         rejected   event id     the retry set (next poll emits it)
ignico            settle-failed   failed     payout id    unsettled (next run settles it)
orders-platform   refused         rejected   event id     the retry set (next poll emits it)
coniq-outbound    record-failed   failed     unit id      pending (next drain records it)

``refused``: the receiver refused the item's event (or it had no recipient);
``settle-failed``: Ignico refused to realize or cancel the payout; ``record-failed``: Coniq
refused the loop-back record. Each hash maps the id to ``{"reason", "at"}`` (JSON; a bare
reason, as older releases wrote, reads with no time). Listings show ids, kind, reason and
time only: never the item's personal data, which stays at the source.

A retry or a discard is one Lua script (the item leaves its hash exactly once) and is
recorded in ``{prefix}:source:audit``. A discarded refused item is kept in ``discarded``
so no later poll emits it again.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from worker.stores.codec import text
from worker.stores.keys import Keys

__all__ = [
    "IGNICO_EVENT_PREFIX",
    "ORDERS_EVENT_PREFIX",
    "SOURCES",
    "HoldKind",
    "RefusedItem",
    "RefusedItems",
    "hold_value",
]

IGNICO_EVENT_PREFIX = "ignico-payout-"
ORDERS_EVENT_PREFIX = "orders-platform-order-"
MAX_REASON_CHARS = 200


class HoldKind(enum.StrEnum):
    REFUSED = "refused"
    SETTLE_FAILED = "settle-failed"
    RECORD_FAILED = "record-failed"


@dataclass(frozen=True)
class _Hold:
    kind: HoldKind
    hash: str  # suffix of the hash holding these items
    target: str  # suffix of the key a retry puts the item back on
    target_is_hash: bool = False  # a hash (event id → payout id) rather than a set


# Checked in order: an id is looked up in each of its source's holds.
_HOLDS: dict[str, tuple[_Hold, ...]] = {
    "ignico": (
        _Hold(HoldKind.REFUSED, "rejected", "retry"),
        _Hold(HoldKind.SETTLE_FAILED, "failed", "unsettled", target_is_hash=True),
    ),
    "orders-platform": (_Hold(HoldKind.REFUSED, "rejected", "retry"),),
    "coniq-outbound": (_Hold(HoldKind.RECORD_FAILED, "failed", "pending"),),
}
SOURCES = tuple(_HOLDS)

# KEYS: hold hash, target key ("" for none), audit list
# ARGV: id, target mode (set | hash | none), target field, target value, audit entry
_MOVE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] == 'set' then redis.call('SADD', KEYS[2], ARGV[1])
elseif ARGV[2] == 'hash' then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
redis.call('RPUSH', KEYS[3], ARGV[5])
return held
"""


def hold_value(reason: str, at: float) -> str:
    """What a source writes for a held item: its reason and when (JSON)."""
    return json.dumps({"reason": reason[:MAX_REASON_CHARS], "at": round(at, 3)})


@dataclass(frozen=True)
class RefusedItem:
    source: str
    id: str
    kind: HoldKind
    reason: str
    at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "id": self.id,
            "kind": self.kind.value,
            "reason": self.reason,
            "at": self.at,
        }


def _decode(source: str, item_id: str, kind: HoldKind, raw: bytes | str) -> RefusedItem:
    value = text(raw)
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        at = parsed.get("at")
        return RefusedItem(
            source,
            item_id,
            kind,
            str(parsed.get("reason", "")),
            float(at) if isinstance(at, int | float) else None,
        )
    return RefusedItem(source, item_id, kind, value, None)  # a bare reason (older release)


class RefusedItems:
    """List, retry and discard the items the reward sources hold for operators."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._move = client.register_script(_MOVE)

    def held(self, source: str) -> list[RefusedItem]:
        """Every item ``source`` holds, oldest first (items with no time first)."""
        items = [
            _decode(source, text(item_id), hold.kind, raw)
            for hold in _HOLDS[source]
            for item_id, raw in self._redis.hscan_iter(self._keys.source(source, hold.hash))
        ]
        return sorted(items, key=lambda item: (item.at or 0.0, item.id))

    def iter_all(self) -> Iterator[RefusedItem]:
        for source in SOURCES:
            yield from self.held(source)

    def get(self, source: str, item_id: str) -> RefusedItem | None:
        for hold in _HOLDS[source]:
            raw = self._redis.hget(self._keys.source(source, hold.hash), item_id)
            if raw is not None:
                return _decode(source, item_id, hold.kind, raw)
        return None

    def retry(self, source: str, item_id: str, *, now: float, actor: str) -> RefusedItem | None:
        """Put the item back where its source picks it up on its next run; None if not held."""
        for hold in _HOLDS[source]:
            target = self._keys.source(source, hold.target)
            if hold.target_is_hash:  # Ignico settling: unsettled maps event id → payout id
                move = _Move(target, "hash", IGNICO_EVENT_PREFIX + item_id, item_id)
            else:
                move = _Move(target, "set")
            moved = self._run(source, hold, item_id, move, _entry("retry", now, actor))
            if moved is not None:
                return moved
        return None

    def discard(
        self, source: str, item_id: str, *, now: float, actor: str, reason: str = ""
    ) -> RefusedItem | None:
        """Drop the item for good (audited); a refused event is never emitted again."""
        for hold in _HOLDS[source]:
            if hold.kind is HoldKind.REFUSED:  # remembered, so no later walk emits it
                kept = hold_value(reason or "discarded by an operator", now)
                move = _Move(self._keys.source(source, "discarded"), "hash", item_id, kept)
            else:
                move = _Move("", "none")
            moved = self._run(source, hold, item_id, move, _entry("discard", now, actor, reason))
            if moved is not None:
                return moved
        return None

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self._redis.lrange(self._keys.source_audit, -limit, -1)]

    def _run(
        self, source: str, hold: _Hold, item_id: str, move: _Move, entry: dict[str, Any]
    ) -> RefusedItem | None:
        """Take ``item_id`` out of ``hold`` and apply ``move``, atomically; None if not held."""
        entry.update(source=source, kind=hold.kind.value, id=item_id)
        held = self._move(
            keys=[self._keys.source(source, hold.hash), move.target, self._keys.source_audit],
            args=[item_id, move.mode, move.field, move.value, json.dumps(entry, sort_keys=True)],
        )
        return None if held is None else _decode(source, item_id, hold.kind, held)


@dataclass(frozen=True)
class _Move:
    """Where a held item goes: a set (``SADD``), a hash field, or nowhere (``none``)."""

    target: str
    mode: str  # set | hash | none
    field: str = ""
    value: str = ""


def _entry(action: str, now: float, actor: str, reason: str = "") -> dict[str, Any]:
    """An audit-log entry (the item's source, kind and id are added when it moves)."""
    entry: dict[str, Any] = {"action": action, "at": round(now, 3), "actor": actor}
    if reason:
        entry["reason"] = reason[:MAX_REASON_CHARS]
    return entry
