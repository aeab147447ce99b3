"""The loop back to Coniq: record each fulfilled Coniq reward in Coniq, once, later.

Stage: after fulfilment (worker side). When a unit whose event came from Coniq reaches
FULFILLED, the fulfilment flow calls :func:`note_fulfilled`, which only adds the unit id to
a Redis set (cheap, cannot fail the reward). A beat task drains the set: for each unit it
reads the ledger and the stored event and assigns ``CONIQ_RECORD_OFFER_ID`` to the
customer's subscription (providers.md 3.5 [DESIGN]) with ``rewardrelay-record:<unit id>``
as ``external_reference`` (3.6), so a retry after a timeout is deduplicated by Coniq. A Coniq
outage leaves the set as it is for the next run; nothing here ever touches a unit's state
or calls a reward provider, so recording can never re-issue a reward.

Active only when ``CONIQ_API_KEY`` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import Task, shared_task

from tasks.http.errors import PermanentProviderError, ProviderError
from tasks.runtime import WorkerRuntime
from tasks.sources.clients.coniq import ConiqClient
from tasks.sources.common import PollReport, SourceKeys, source_lock
from worker.config import Settings
from worker.stores.codec import text
from worker.stores.models import Unit, UnitState
from worker.stores.refused import hold_value

__all__ = [
    "DRAIN_CONIQ_TASK",
    "OutboundKeys",
    "coniq_client",
    "drain",
    "drain_coniq_outbound",
    "note_fulfilled",
    "reference_for",
]

log = logging.getLogger(__name__)

SOURCE = "coniq-outbound"
DRAIN_CONIQ_TASK = "tasks.sources.drain_coniq_outbound"
MAX_PER_RUN = 500  # bound one run's Coniq calls; the rest wait for the next beat
REFERENCE_PREFIX = "rewardrelay-record:"  # our external_reference namespace at Coniq

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
    """Queue a Coniq unit, about to be marked FULFILLED, for recording in Coniq.

    A no-op for other sources. Never raises: the reward has been issued and the unit must
    reach FULFILLED whatever happens here. ``drain`` records a queued unit only once the
    ledger says FULFILLED.
    """
    if unit.source != "coniq" or not rt.settings.coniq_outbound_configured:
        return
    try:
        rt.redis.sadd(_names(rt).pending, unit.id)
    except redis.RedisError:
        log.exception("could not queue a Coniq record", extra={"unit_id": unit.id})


def reference_for(unit_id: str) -> str:
    """Our idempotency reference for recording one unit in Coniq (never the provider's key)."""
    return f"{REFERENCE_PREFIX}{unit_id}"


def _assignment(rt: WorkerRuntime, unit: Unit) -> tuple[str, str | None] | None:
    """(subscription id, expiry date) from the stored Coniq event; None if unusable."""
    event = rt.inbox.get(unit.event_id)
    data = event.body.get("data") if event is not None else None
    if not isinstance(data, dict):
        return None
    subscription = data.get("subscription") or {}
    reward = data.get("reward") or {}
    if not isinstance(subscription, dict) or not subscription.get("id"):
        return None
    expiry = reward.get("expiry_date") if isinstance(reward, dict) else None
    return str(subscription["id"]), str(expiry) if expiry else None


def drain(rt: WorkerRuntime, client: ConiqClient, report: PollReport | None = None) -> PollReport:
    """Record every queued unit in Coniq; a transient failure stops the run (retried later).

    Only reads the ledger: whatever Coniq answers, no unit changes state, so recording can
    never re-issue a reward.
    """
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
        found = _assignment(rt, unit)
        if found is None:
            _give_up(rt, names, unit_id, "event has no subscription id")
            settled["failed"] = settled.get("failed", 0) + 1
            continue
        subscription_id, expiry = found
        try:
            record = client.assign_reward(
                subscription_id, rt.settings.coniq_record_offer_id, reference_for(unit_id), expiry
            )
        except PermanentProviderError as exc:
            log.error("coniq refused a reward record: %s", exc.reason, extra={"unit_id": unit_id})
            _give_up(rt, names, unit_id, exc.reason)
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


def _give_up(rt: WorkerRuntime, names: OutboundKeys, unit_id: str, reason: str) -> None:
    """Leave a unit unrecorded for good, visible to operators in the ``failed`` hash."""
    pipe = rt.redis.pipeline()
    pipe.hset(names.failed, unit_id, hold_value(reason, time.time()))
    pipe.srem(names.pending, unit_id)
    pipe.execute()


def coniq_client(settings: Settings) -> ConiqClient:
    """This process's Coniq client."""
    global _client
    with _client_lock:
        if _client is None:
            _client = ConiqClient.from_settings(settings)
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
    report.log(log)
    return report


@shared_task(  # type: ignore[untyped-decorator]
    name=DRAIN_CONIQ_TASK, bind=True, ignore_result=True
)
def drain_coniq_outbound(self: Task) -> dict[str, Any]:
    """Beat: record fulfilled Coniq rewards in Coniq."""
    from tasks.runtime import runtime  # the per-process runtime every task shares

    rt = runtime(self)
    if not rt.settings.coniq_outbound_configured:
        return PollReport(SOURCE, stopped="not configured").to_dict()
    return run_drain(rt, coniq_client(rt.settings)).to_dict()
