"""Reward source, Ignico: pending payouts become ``reward.granted`` events; settle them back.

Stage: producer (worker side, beat-scheduled). One task run does two things:

poll    walk every page of pending payouts (type ``sub``, not realized, not cancelled),
        oldest id first, from the watermark on; emit each payout not yet emitted as
        ``ignico-payout-<transaction id>`` to the receiver's ``/events``; only after the
        receiver took it record it as unsettled and move the watermark. A failed emit
        stops the walk where it is, so the next run resumes with that payout: a restart
        mid-page neither skips nor repeats (a crash between emit and record repeats one
        emit, which the edge answers ``200 duplicate``: same id, same body).
retry   payouts an operator asked to retry (refused before; ``RefusedItems.retry``) are
        read again from Ignico and emitted like new ones; refused again, they are held
        again with the new reason.
settle  for each emitted payout, read its event's units in the ledger: every unit
        FULFILLED → realize the transaction; a unit's dead letter DISCARDED → cancel it
        with the discard reason. Anything else waits for a later run.

The watermark is the newest payout handled ``(last id, its addedAt)``; a walk asks for
``filter[addedAtGreaterEqual]`` a lookback before it, so it reads recent payouts only.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from celery import Task, shared_task

from tasks.http.errors import ConflictError, NotFoundError, ProviderError
from tasks.runtime import WorkerRuntime
from tasks.sources.clients.ignico import IgnicoClient, Transaction
from tasks.sources.common import (
    PollReport,
    SourceKeys,
    event_outcome,
    hold_again,
    run_locked,
    source_emitter,
)
from tasks.sources.emit import (
    SOURCE_TIME_FORMAT,
    EmitError,
    Emitter,
    RewardEvent,
    source_time,
)
from worker.config import Settings
from worker.stores.codec import text, text_map
from worker.stores.refused import IGNICO_EVENT_PREFIX, hold_value

__all__ = [
    "POLL_IGNICO_TASK",
    "event_id_for",
    "ignico_client",
    "poll_ignico",
    "poll_payouts",
    "retry_payouts",
    "run_ignico",
    "settle_payouts",
]

log = logging.getLogger(__name__)

SOURCE = "ignico"
POLL_IGNICO_TASK = "tasks.sources.poll_ignico"
EVENT_ID_PREFIX = IGNICO_EVENT_PREFIX
MAX_SETTLE_PER_RUN = 500  # bound one run's provider calls; the rest wait for the next beat
# How far before the watermark a walk starts: payouts added out of order, or that slid to
# an already-read page during a walk, are still found (membership stops repeats).
WATERMARK_LOOKBACK_SECONDS = 86_400

_clients: dict[str, IgnicoClient] = {}
_clients_lock = threading.Lock()


def event_id_for(transaction_id: str) -> str:
    """The deterministic event id of one payout: a repeat emit is a duplicate at the edge."""
    return f"{EVENT_ID_PREFIX}{transaction_id}"


def _account_id(settings: Settings) -> str:
    """The Ignico workspace (``acme`` of ``acme.igni.co``) names the account."""
    host = urlsplit(settings.ignico_base_url).hostname or "ignico"
    return host.split(".")[0] if host.endswith(".igni.co") else host


def payout_event(tx: Transaction, settings: Settings) -> RewardEvent | None:
    """The ``reward.granted`` event for one payout, or None when it has no recipient."""
    if tx.user is None or not tx.user.email:
        return None
    local = tx.user.email.split("@")[0] or "member"
    return RewardEvent(
        id=event_id_for(tx.id),
        account_id=_account_id(settings),
        created_at=source_time(tx.added_at),
        recipient={
            "email": tx.user.email,
            "first_name": tx.user.first_name or local,
            "last_name": tx.user.last_name or "-",
        },
        reward_code=settings.ignico_reward_code,
        reference=f"ignico:transaction:{tx.id}",
    )


def _since(added_at: str) -> str | None:
    """The ``addedAtGreaterEqual`` bound for a watermark: its time minus the lookback."""
    if not added_at:
        return None
    try:
        when = datetime.strptime(added_at, SOURCE_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return (when - timedelta(seconds=WATERMARK_LOOKBACK_SECONDS)).strftime(SOURCE_TIME_FORMAT)


def poll_payouts(
    rt: WorkerRuntime, client: IgnicoClient, emit: Emitter, report: PollReport | None = None
) -> PollReport:
    """Walk every page of pending payouts from the watermark on and emit each new one.

    A payout is new unless its event id is recorded as emitted (``unsettled``) or refused
    (``rejected``): membership, not an id comparison, decides, so a payout that slid to an
    already-read page while the walk ran (another payout closed meanwhile) is caught by the
    next run instead of being skipped for good. The watermark (newest payout handled)
    narrows the query to ``addedAt >= watermark - WATERMARK_LOOKBACK_SECONDS``.

    Returns the report; ``report.stopped`` names why the walk ended early (the receiver or
    Ignico unavailable), in which case the next run resumes at the first unsent payout.
    """
    report = report or PollReport(SOURCE)
    names = SourceKeys(rt.keys, SOURCE)
    mark = text_map(rt.redis.hgetall(names.watermark))
    since = _since(mark.get("added_at", ""))
    page = 1
    while True:
        try:
            batch = client.pending_payouts(
                page=page, page_size=rt.settings.source_page_size, added_since=since
            )
        except ProviderError as exc:
            report.stopped = f"ignico: {exc.reason}"
            return report
        report.pages += 1
        for tx in batch.items:
            event_id = event_id_for(tx.id)
            if not tx.is_pending_payout or _known(rt, names, event_id):
                report.skipped += 1
                continue
            event = payout_event(tx, rt.settings)
            if event is None:
                log.warning("ignico payout without a recipient email", extra={"tx": tx.id})
                _reject(rt, names, mark, tx, "no-recipient")
                report.rejected += 1
                continue
            try:
                result = emit(event)
            except EmitError as exc:
                if exc.retryable:
                    report.stopped = str(exc)
                    return report
                # Refused for good: record it for operators and go on, or one bad
                # payout would wedge the source forever.
                log.error("receiver refused an ignico payout event: %s", exc.reason)
                _reject(rt, names, mark, tx, exc.reason)
                report.rejected += 1
                continue
            report.count(result)
            # Recorded only after the receiver took it: a crash in between repeats the
            # emit next run, which the edge answers 200 duplicate (same id, same body).
            pipe = rt.redis.pipeline()
            pipe.hset(names.unsettled, event_id, tx.id)
            _advance(pipe, names, mark, tx)
            pipe.execute()
        if not batch.has_next or not batch.items:
            return report
        page += 1


def _known(rt: WorkerRuntime, names: SourceKeys, event_id: str) -> bool:
    """Emitted, refused, queued for an operator's retry, or discarded by one."""
    pipe = rt.redis.pipeline()
    pipe.hexists(names.unsettled, event_id)
    pipe.hexists(names.rejected, event_id)
    pipe.sismember(names.retry, event_id)
    pipe.hexists(names.discarded, event_id)
    return any(pipe.execute())


def _reject(
    rt: WorkerRuntime, names: SourceKeys, mark: dict[str, str], tx: Transaction, reason: str
) -> None:
    pipe = rt.redis.pipeline()
    pipe.hset(names.rejected, event_id_for(tx.id), hold_value(reason, time.time()))
    _advance(pipe, names, mark, tx)
    pipe.execute()


def retry_payouts(
    rt: WorkerRuntime, client: IgnicoClient, emit: Emitter, report: PollReport | None = None
) -> PollReport:
    """Emit again the refused payouts an operator queued for a retry.

    Each is read from Ignico again (it may have changed meanwhile): still a pending payout
    with a recipient → emitted and recorded as unsettled, like a new one; otherwise, or
    refused by the receiver again, held again with the reason. A receiver or Ignico
    outage stops the step and leaves the rest queued.
    """
    report = report or PollReport(SOURCE)
    names = SourceKeys(rt.keys, SOURCE)
    for raw in sorted(rt.redis.smembers(names.retry)):
        event_id = text(raw)
        tx_id = event_id.removeprefix(EVENT_ID_PREFIX)
        try:
            tx = client.find_with_user(tx_id)
        except ProviderError as exc:
            report.stopped = f"ignico: {exc.reason}"
            return report
        if tx is None:
            hold_again(rt.redis, names, event_id, "transaction not found", report)
            continue
        event = payout_event(tx, rt.settings) if tx.is_pending_payout else None
        if event is None:
            why = "no-recipient" if tx.is_pending_payout else "no longer a pending payout"
            hold_again(rt.redis, names, event_id, why, report)
            continue
        try:
            result = emit(event)
        except EmitError as exc:
            if exc.retryable:
                report.stopped = str(exc)
                return report
            hold_again(rt.redis, names, event_id, exc.reason, report)
            continue
        report.count(result)
        pipe = rt.redis.pipeline()
        pipe.hset(names.unsettled, event_id, tx.id)
        pipe.srem(names.retry, event_id)
        pipe.execute()
    return report


def _advance(pipe: Any, names: SourceKeys, mark: dict[str, str], tx: Transaction) -> None:
    """Move the watermark to ``tx`` when it is newer (ids only grow at Ignico)."""
    if tx.id.isdigit() and int(tx.id) > int(mark.get("last_id") or 0):
        mark.update(last_id=tx.id, added_at=tx.added_at)
        pipe.hset(names.watermark, mapping={"last_id": tx.id, "added_at": tx.added_at})


def settle_payouts(
    rt: WorkerRuntime, client: IgnicoClient, report: PollReport | None = None
) -> PollReport:
    """Realize payouts whose reward was fulfilled; cancel those whose dead letter was
    discarded. Never touches a unit; a provider failure stops this run's settling."""
    report = report or PollReport(SOURCE)
    names = SourceKeys(rt.keys, SOURCE)
    settled = report.settled
    for done, (raw_event, raw_tx) in enumerate(rt.redis.hscan_iter(names.unsettled)):
        if done >= MAX_SETTLE_PER_RUN:
            break
        event_id, tx_id = text(raw_event), text(raw_tx)
        outcome = event_outcome(rt.redis, rt.keys, event_id)
        if outcome.status == "open":
            continue
        try:
            result = _close(client, tx_id, outcome.status, outcome.reason)
        except NotFoundError:
            result = "missing"
            rt.redis.hset(names.failed, tx_id, hold_value("transaction not found", time.time()))
        except ProviderError as exc:
            report.stopped = f"ignico: {exc.reason}"
            break
        rt.redis.hdel(names.unsettled, event_id)
        settled[result] = settled.get(result, 0) + 1
    return report


def _close(client: IgnicoClient, tx_id: str, status: str, reason: str) -> str:
    """Realize (``fulfilled``) or cancel (``discarded``) one payout.

    On 409 read the transaction: already in the wanted state counts as success (a previous
    run closed it and died before forgetting it); the other state is reported as such.
    """
    wanted = "realized" if status == "fulfilled" else "cancelled"
    try:
        if wanted == "realized":
            client.realize(tx_id)
        else:
            client.cancel(tx_id, reason)
    except ConflictError:
        current = client.get_transaction(tx_id)
        state = "realized" if current.realized else "cancelled" if current.cancelled else "open"
        if state != wanted:
            log.warning("ignico payout closed elsewhere", extra={"tx": tx_id, "state": state})
            return f"already-{state}"
    return wanted


def ignico_client(settings: Settings) -> IgnicoClient:
    """This process's Ignico client (one per process, reused across runs)."""
    with _clients_lock:
        client = _clients.get("ignico")
        if client is None:
            client = IgnicoClient.from_settings(settings)
            _clients["ignico"] = client
        return client


def run_ignico(rt: WorkerRuntime, client: IgnicoClient, emit: Emitter) -> PollReport:
    """One beat run under the source lock: operators' retries, poll, then settle."""

    def poll_then_settle(report: PollReport) -> None:
        retry_payouts(rt, client, emit, report)
        if not report.stopped:
            poll_payouts(rt, client, emit, report)
        stopped = report.stopped
        settle_payouts(rt, client, report)
        report.stopped = stopped or report.stopped

    return run_locked(rt.redis, rt.keys, SOURCE, poll_then_settle, log)


@shared_task(  # type: ignore[untyped-decorator]
    name=POLL_IGNICO_TASK, bind=True, ignore_result=True
)
def poll_ignico(self: Task) -> dict[str, Any]:
    """Beat: emit new Ignico payouts as reward events and settle delivered ones."""
    from tasks.runtime import runtime  # the per-process runtime every task shares

    rt = runtime(self)
    settings = rt.settings
    if not settings.ignico_configured:
        return PollReport(SOURCE, stopped="not configured").to_dict()
    return run_ignico(rt, ignico_client(settings), source_emitter(settings)).to_dict()
