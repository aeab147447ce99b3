"""Reward source, orders platform: paid orders above an amount become ``reward.granted``.

Stage: producer (worker side, beat-scheduled). One run walks the orders the rule selects
(``filter[status]=paid``, and ``total >= ORDERS_MIN_TOTAL`` checked here: the platform has
no amount filter), newest change first (``sort=-updated_at``), page by page, until it
reaches orders changed before the watermark minus a lookback. Each selected order not yet
emitted is sent to the receiver's ``/events`` as ``orders-platform-order-<id>``, then
recorded in the ``emitted`` set. Only a walk that reached its end moves the watermark (to
the newest change it saw), so a restart mid-walk starts again from the newest order and
skips, by membership, what it already sent: nothing is skipped and nothing repeated.

Access: the authorization-code flow is run once by ``rewardrelay connect orders-platform``;
the refresh token lives in Redis (:class:`RedisTokenStore`), rotated at every refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Task, shared_task

from tasks.http.errors import NotFoundError, ProviderError
from tasks.runtime import WorkerRuntime
from tasks.sources.clients.orders_platform import OrdersPlatformClient, PlatformOrder
from tasks.sources.common import (
    PollReport,
    SourceKeys,
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
from worker.stores.codec import text
from worker.stores.refused import ORDERS_EVENT_PREFIX, hold_value

__all__ = [
    "POLL_ORDERS_TASK",
    "RedisTokenStore",
    "event_id_for",
    "orders_client",
    "poll_orders",
    "poll_orders_platform",
    "retry_orders",
    "run_orders",
]

log = logging.getLogger(__name__)

SOURCE = "orders-platform"
POLL_ORDERS_TASK = "tasks.sources.poll_orders_platform"
EVENT_ID_PREFIX = ORDERS_EVENT_PREFIX
# Orders changed this long before the watermark are still read: one that slid to an
# already-read page during a walk (another order left the filter) is found next run.
WATERMARK_LOOKBACK_SECONDS = 86_400

_clients_lock = threading.Lock()
_clients: dict[str, OrdersPlatformClient] = {}


def event_id_for(order_id: str) -> str:
    """The deterministic event id of one order: a repeat emit is a duplicate at the edge."""
    return f"{EVENT_ID_PREFIX}{order_id}"


class RedisTokenStore:
    """The refresh token in Redis (``{prefix}:source:orders-platform:token:refresh``).

    Shared by every worker process and kept across restarts; never logged.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self._key = key

    def __repr__(self) -> str:
        return f"RedisTokenStore({self._key!r})"

    def load(self) -> str | None:
        raw = self._redis.get(self._key)
        return text(raw) if raw is not None else None

    def save(self, refresh_token: str) -> None:
        self._redis.set(self._key, refresh_token)


def token_store(rt_redis: redis.Redis, names: SourceKeys) -> RedisTokenStore:
    return RedisTokenStore(rt_redis, names.token("refresh"))


def qualifies(order: PlatformOrder, settings: Settings) -> bool:
    """The rule: a paid order whose total reaches ``ORDERS_MIN_TOTAL``, created within the
    dedupe horizon (``DEDUPE_RETENTION_SECONDS``): an older order's emitted record may
    have been pruned (``tasks.bookkeeping``), so emitting it could reward it twice."""
    return (
        order.status == "paid"
        and order.total >= settings.orders_min_total
        and _within_dedupe_horizon(order.created_at, settings)
    )


def _within_dedupe_horizon(created_at: str, settings: Settings) -> bool:
    try:
        when = datetime.strptime(created_at.strip(), SOURCE_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return True  # no readable date: the event id alone dedupes it, as before
    horizon = datetime.now(UTC) - timedelta(seconds=settings.dedupe_retention_seconds)
    return when >= horizon


def order_event(order: PlatformOrder, settings: Settings) -> RewardEvent | None:
    """The ``reward.granted`` event for one order, or None without a customer email."""
    if not order.email:
        return None
    local = order.email.split("@")[0] or "customer"
    return RewardEvent(
        id=event_id_for(order.id),
        account_id=SOURCE,
        created_at=source_time(order.created_at),
        recipient={
            "email": order.email,
            "first_name": order.first_name or local,
            "last_name": order.last_name or "-",
        },
        reward_code=settings.orders_reward_code,
        reference=f"orders-platform:order:{order.id}",
    )


def _floor(watermark: str) -> str:
    """Orders changed before this (``YYYY-MM-DD HH:MM:SS``) end the walk; "" reads all."""
    if not watermark:
        return ""
    try:
        when = datetime.strptime(watermark, SOURCE_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return ""
    return (when - timedelta(seconds=WATERMARK_LOOKBACK_SECONDS)).strftime(SOURCE_TIME_FORMAT)


def poll_orders(
    rt: WorkerRuntime,
    client: OrdersPlatformClient,
    emit: Emitter,
    report: PollReport | None = None,
) -> PollReport:
    """Walk paid orders newest change first down to the watermark; emit each new one.

    Returns the report; ``report.stopped`` names why the walk ended early, in which case
    the watermark is left as it was and the next run walks again (skipping, by
    membership, what this one emitted).
    """
    report = report or PollReport(SOURCE)
    names = SourceKeys(rt.keys, SOURCE)
    emitted_key = names.emitted
    floor = _floor(text(rt.redis.hget(names.watermark, "updated_at") or b""))
    newest = ""
    page = 1
    while True:
        try:
            batch = client.list_orders(
                {"status": ["paid"]},
                sort="-updated_at",
                page=page,
                per_page=rt.settings.source_page_size,
            )
        except ProviderError as exc:
            report.stopped = f"orders platform: {exc.reason}"
            return report
        report.pages += 1
        reached_floor = False
        for order in batch.items:
            newest = max(newest, order.updated_at)
            if floor and order.updated_at < floor:
                reached_floor = True
                break
            if not qualifies(order, rt.settings) or rt.redis.sismember(emitted_key, order.id):
                report.skipped += 1
                continue
            event = order_event(order, rt.settings)
            if event is None:
                held = hold_value("no-recipient", time.time())
                rt.redis.hset(names.rejected, event_id_for(order.id), held)
                rt.redis.sadd(emitted_key, order.id)
                report.rejected += 1
                continue
            try:
                report.count(emit(event))
            except EmitError as exc:
                if exc.retryable:
                    report.stopped = str(exc)
                    return report
                log.error("receiver refused an orders-platform event: %s", exc.reason)
                rt.redis.hset(names.rejected, event.id, hold_value(exc.reason, time.time()))
                report.rejected += 1
            rt.redis.sadd(emitted_key, order.id)
        if reached_floor or not batch.has_next or not batch.items:
            break
        page += 1
    if newest:
        rt.redis.hset(names.watermark, "updated_at", newest)
    return report


def retry_orders(
    rt: WorkerRuntime,
    client: OrdersPlatformClient,
    emit: Emitter,
    report: PollReport | None = None,
) -> PollReport:
    """Emit again the refused orders an operator queued for a retry.

    Each order is read again (``GET /api/orders/{id}``): still qualifying with a recipient
    → emitted; otherwise, or refused by the receiver again, held again with the reason. An
    outage stops the step and leaves the rest queued. (Every one is already in
    ``emitted``, so the walk never emits them by itself.)
    """
    report = report or PollReport(SOURCE)
    names = SourceKeys(rt.keys, SOURCE)
    for raw in sorted(rt.redis.smembers(names.retry)):
        event_id = text(raw)
        try:
            order = client.get_order(event_id.removeprefix(EVENT_ID_PREFIX))
        except NotFoundError:
            hold_again(rt.redis, names, event_id, "order not found", report)
            continue
        except ProviderError as exc:
            report.stopped = f"orders platform: {exc.reason}"
            return report
        event = order_event(order, rt.settings) if qualifies(order, rt.settings) else None
        if event is None:
            why = "no-recipient" if qualifies(order, rt.settings) else "no longer qualifies"
            hold_again(rt.redis, names, event_id, why, report)
            continue
        try:
            report.count(emit(event))
        except EmitError as exc:
            if exc.retryable:
                report.stopped = str(exc)
                return report
            hold_again(rt.redis, names, event_id, exc.reason, report)
            continue
        rt.redis.srem(names.retry, event_id)
    return report


def orders_client(rt: WorkerRuntime) -> OrdersPlatformClient:
    """This process's orders-platform client, its refresh token kept in Redis."""
    settings = rt.settings
    with _clients_lock:
        client = _clients.get(settings.orders_base_url)
        if client is None:
            client = OrdersPlatformClient.from_settings(
                settings, token_store(rt.redis, SourceKeys(rt.keys, SOURCE))
            )
            _clients[settings.orders_base_url] = client
        return client


def run_orders(rt: WorkerRuntime, client: OrdersPlatformClient, emit: Emitter) -> PollReport:
    """One beat run under the source lock: operators' retries, then the walk."""

    def retry_then_poll(report: PollReport) -> None:
        retry_orders(rt, client, emit, report)
        if not report.stopped:
            poll_orders(rt, client, emit, report)

    return run_locked(rt.redis, rt.keys, SOURCE, retry_then_poll, log)


@shared_task(  # type: ignore[untyped-decorator]
    name=POLL_ORDERS_TASK, bind=True, ignore_result=True
)
def poll_orders_platform(self: Task) -> dict[str, Any]:
    """Beat: emit qualifying orders of the orders platform as reward events."""
    from tasks.runtime import runtime  # the per-process runtime every task shares

    rt = runtime(self)
    if not rt.settings.orders_configured:
        return PollReport(SOURCE, stopped="not configured").to_dict()
    return run_orders(rt, orders_client(rt), source_emitter(rt.settings)).to_dict()
