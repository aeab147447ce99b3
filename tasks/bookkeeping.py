"""The sources' and the Coniq loop-back's bookkeeping: kept bounded, and erasable.

Stage: data lifecycle (worker side). The reward sources and the loop back to Coniq keep
per-item records next to the ledger (``tasks.sources``): the orders platform's set of
emitted order ids, Ignico's unsettled and rejected payouts, the loop-back's queue and
its done records. This module names them for erasure (``side_records``) and prunes those
that would otherwise grow for ever (``prune``), a bounded slice per beat run:

* an emitted order id is forgotten once neither its event nor the event's dedupe marker
  exists: the poller never emits an order created before the dedupe horizon, so a
  forgotten order can never be emitted (and rewarded) again;
* a loop-back done or failed record is forgotten once its unit has expired.

Ignico's unsettled payouts leave on their own when settled (settling reads the dedupe
marker of an expired event); rejected and failed items are rare operator notes and stay.
"""

from __future__ import annotations

import redis

from tasks.sources.common import SourceKeys
from tasks.sources.coniq_outbound import SOURCE as CONIQ_OUTBOUND
from tasks.sources.coniq_outbound import OutboundKeys
from tasks.sources.ignico import SOURCE as IGNICO
from tasks.sources.orders_platform import SOURCE as ORDERS
from tasks.sources.orders_platform import event_id_for as order_event_id
from worker.stores.codec import text
from worker.stores.erasure import SideRecord
from worker.stores.keys import Keys

__all__ = ["PRUNE_BATCH", "prune", "side_records"]

PRUNE_BATCH = 500  # records looked at per store per run: a run stays well under a second


def side_records(keys: Keys) -> list[SideRecord]:
    """Where the sources and the loop-back keep entries per event or unit (for erasure)."""
    records: list[SideRecord] = []
    for source in (IGNICO, ORDERS):
        names = SourceKeys(keys, source)
        records.append(SideRecord("source_progress", names.unsettled, "hash", "event"))
        records.append(SideRecord("source_progress", names.rejected, "hash", "event"))
    outbound = OutboundKeys(keys, CONIQ_OUTBOUND)
    records += [
        SideRecord("coniq_loopback", outbound.pending, "set", "unit", drop=True),
        SideRecord("coniq_loopback", outbound.recorded, "hash", "unit"),
        SideRecord("coniq_loopback", outbound.failed, "hash", "unit"),
    ]
    return records


def prune(client: redis.Redis, keys: Keys, *, batch: int = PRUNE_BATCH) -> dict[str, int]:
    """One bounded slice of pruning per store; counts of what was forgotten."""
    pruned = {"orders_emitted": _prune_emitted_orders(client, keys, batch)}
    outbound = OutboundKeys(keys, CONIQ_OUTBOUND)
    for label, key in (("coniq_recorded", outbound.recorded), ("coniq_failed", outbound.failed)):
        pruned[label] = _prune_by_unit(client, keys, key, batch)
    return {label: count for label, count in pruned.items() if count}


def _cursor(client: redis.Redis, keys: Keys, name: str) -> int:
    raw = client.hget(keys.retention_cursors, name)
    return int(text(raw)) if raw is not None else 0


def _prune_emitted_orders(client: redis.Redis, keys: Keys, batch: int) -> int:
    names = SourceKeys(keys, ORDERS)
    cursor, members = client.sscan(
        names.emitted, _cursor(client, keys, "orders-emitted"), count=batch
    )
    order_ids = [text(raw) for raw in members]
    pipe = client.pipeline(transaction=False)
    for order_id in order_ids:
        event_id = order_event_id(order_id)
        pipe.exists(keys.event(event_id), keys.seen(event_id))
        pipe.hexists(names.rejected, event_id)
    replies = pipe.execute()
    forgotten = [
        order_id
        for order_id, alive, rejected in zip(order_ids, replies[::2], replies[1::2], strict=True)
        if not alive and not rejected
    ]
    if forgotten:
        client.srem(names.emitted, *forgotten)
    client.hset(keys.retention_cursors, "orders-emitted", int(cursor))
    return len(forgotten)


def _prune_by_unit(client: redis.Redis, keys: Keys, key: str, batch: int) -> int:
    cursor, entries = client.hscan(key, _cursor(client, keys, key), count=batch)
    unit_ids = [text(raw) for raw in entries]
    pipe = client.pipeline(transaction=False)
    for unit_id in unit_ids:
        pipe.exists(keys.unit(unit_id))
    forgotten = [uid for uid, alive in zip(unit_ids, pipe.execute(), strict=True) if not alive]
    if forgotten:
        client.hdel(key, *forgotten)
    client.hset(keys.retention_cursors, key, int(cursor))
    return len(forgotten)
