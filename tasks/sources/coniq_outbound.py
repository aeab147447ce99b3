"""The loop back to Coniq: record each fulfilled Coniq reward in Coniq, once, later.

Stage: after fulfilment (worker side). When a unit whose event came from Coniq reaches
FULFILLED, the fulfilment flow calls :func:`note_fulfilled`, which only adds the unit id to
a Redis set (cheap, cannot fail the reward). A beat task drains the set: for each unit it
reads the ledger and the stored event and calls Coniq with the unit id as
``external_reference``, so a retry after a timeout is deduplicated by Coniq. A Coniq
outage leaves the set as it is for the next run; nothing here ever touches a unit's state
or calls a reward provider, so recording can never re-issue a reward.

Active only when ``CONIQ_API_KEY`` is set.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Task, shared_task

from tasks.providers.coniq import ConiqClient
from tasks.providers.errors import PermanentProviderError, ProviderError
from tasks.runtime import WorkerRuntime
from tasks.sources.common import PollReport, SourceKeys, source_lock
from worker.config import Settings
from worker.stores.codec import text
from worker.stores.models import Unit, UnitState

__all__ = [
    "DRAIN_CONIQ_TASK",
    "OutboundKeys",
    "coniq_client",
    "drain",
    "drain_coniq_outbound",
    "note_fulfilled",
]

log = logging.getLogger(__name__)

SOURCE = "coniq-outbound"
DRAIN_CONIQ_TASK = "tasks.sources.drain_coniq_outbound"
MAX_PER_RUN = 500  # bound one run's Coniq calls; the rest wait for the next beat

_client_lock = threading.Lock()
_client: ConiqClient | None = None


class OutboundKeys(SourceKeys):
    """``pending`` (set of unit ids to record), ``recorded`` (unit → Coniq record id)."""

    @property
    def pending(self) -> str:
        return self._key("pending")

    @property
    def recorded(self) -> str:
        return self._key("recorded")


def _names(rt: WorkerRuntime) -> OutboundKeys:
    return OutboundKeys(rt.keys, SOURCE)


def note_fulfilled(rt: WorkerRuntime, unit: Unit) -> None:
    """Queue a fulfilled Coniq unit for recording in Coniq (a no-op for other sources).

    Never raises: the reward is already FULFILLED and must stay so whatever happens here.
    """
    if unit.source != "coniq" or not rt.settings.coniq_outbound_configured:
        return
    try:
        rt.redis.sadd(_names(rt).pending, unit.id)
    except redis.RedisError:
        log.exception("could not queue a Coniq record", extra={"unit_id": unit.id})


def _details(rt: WorkerRuntime, unit: Unit) -> tuple[str, dict[str, Any]] | None:
    """(reward id, record details) from the stored Coniq event; None if unusable."""
    event = rt.inbox.get(unit.event_id)
    data = event.body.get("data") if event is not None else None
    if not isinstance(data, dict):
        return None
    reward = data.get("reward") or {}
    customer = data.get("customer") or {}
    subscription = data.get("subscription") or {}
    if not reward.get("id") or not customer.get("id"):
        return None
    fulfilled_at = rt.ledger.field(unit.id, "fulfilled_at")
    when = datetime.fromtimestamp(float(fulfilled_at), UTC) if fulfilled_at else None
    details: dict[str, Any] = {
        "customer_id": str(customer["id"]),
        "subscription_id": str(subscription["id"]) if subscription.get("id") else None,
        "provider": unit.provider,
        "provider_reference": unit.provider_ref,
        "fulfilled_at": when.isoformat(timespec="seconds").replace("+00:00", "Z") if when else None,
    }
    return str(reward["id"]), details


def drain(rt: WorkerRuntime, client: ConiqClient, report: PollReport | None = None) -> PollReport:
    """Record every queued unit in Coniq; a transient failure stops the run (retried later)."""
    report = report or PollReport(SOURCE)
    names = _names(rt)
    settled = report.settled
    for done, raw in enumerate(rt.redis.sscan_iter(names.pending)):
        if done >= MAX_PER_RUN:
            break
        unit_id = text(raw)
        unit = rt.ledger.get(unit_id)
        if unit is None or unit.state is not UnitState.FULFILLED:
            if unit is None or unit.terminal:
                rt.redis.srem(names.pending, unit_id)  # replaced or never fulfilled: nothing to say
                settled["dropped"] = settled.get("dropped", 0) + 1
            continue
        found = _details(rt, unit)
        if found is None:
            rt.redis.hset(names.failed, unit_id, "event has no reward or customer id")
            rt.redis.srem(names.pending, unit_id)
            settled["failed"] = settled.get("failed", 0) + 1
            continue
        reward_id, details = found
        try:
            record = client.record_fulfilment(reward_id, unit_id, details)
        except PermanentProviderError as exc:
            log.error(
                "coniq refused a fulfilment record: %s", exc.reason, extra={"unit_id": unit_id}
            )
            pipe = rt.redis.pipeline()
            pipe.hset(names.failed, unit_id, exc.reason)
            pipe.srem(names.pending, unit_id)
            pipe.execute()
            settled["failed"] = settled.get("failed", 0) + 1
            continue
        except ProviderError as exc:
            report.stopped = f"coniq: {exc.reason}"
            break
        pipe = rt.redis.pipeline()
        pipe.hset(names.recorded, unit_id, record.id)
        pipe.srem(names.pending, unit_id)
        pipe.execute()
        key = "recorded" if record.created else "already-recorded"
        settled[key] = settled.get(key, 0) + 1
    return report


def coniq_client(settings: Settings) -> ConiqClient:
    """This process's Coniq client."""
    global _client
    with _client_lock:
        if _client is None:
            _client = ConiqClient(
                settings.coniq_base_url,
                settings.coniq_api_key,
                timeout=settings.provider_timeout_seconds,
            )
        return _client


def run_drain(rt: WorkerRuntime, client: ConiqClient) -> PollReport:
    """One beat run under the lock."""
    report = PollReport(SOURCE)
    try:
        with source_lock(rt.redis, _names(rt).lock) as acquired:
            if not acquired:
                report.busy = True
                return report
            drain(rt, client, report)
    except redis.RedisError as exc:
        report.stopped = f"redis: {type(exc).__name__}"
    if report.stopped:
        log.warning("coniq outbound stopped early: %s", report.stopped)
    return report


@shared_task(  # type: ignore[untyped-decorator]
    name=DRAIN_CONIQ_TASK, bind=True, ignore_result=True
)
def drain_coniq_outbound(self: Task) -> dict[str, Any]:
    """Beat: record fulfilled Coniq rewards in Coniq."""
    from tasks.fulfill import runtime  # the per-process runtime every task shares

    rt = runtime(self)
    if not rt.settings.coniq_outbound_configured:
        return PollReport(SOURCE, stopped="not configured").to_dict()
    return run_drain(rt, coniq_client(rt.settings)).to_dict()
