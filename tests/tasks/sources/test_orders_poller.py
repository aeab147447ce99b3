"""The orders-platform poller against its sandbox and the real receiver over HTTP."""

from __future__ import annotations

from collections.abc import Callable

from sandboxes import SandboxControl
from sandboxes.server import RunningServer
from tasks.runtime import WorkerRuntime
from tasks.sources.clients.orders_platform import OrdersPlatformClient
from tasks.sources.common import SourceKeys
from tasks.sources.emit import EmitError, EmitResult, HttpEmitter, RewardEvent
from tasks.sources.orders_platform import SOURCE, event_id_for, poll_orders
from tests.source_seeds import order_row, seed_orders
from tests.tasks.sources.conftest import event_ids


class CountingEmitter:
    """Wraps the real emitter: records what it sent; the n-th call fails (retryable)."""

    def __init__(self, inner: HttpEmitter, fail_on: int | None = None) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.sent: list[str] = []

    def __call__(self, event: RewardEvent) -> EmitResult:
        if self.fail_on is not None and len(self.sent) + 1 == self.fail_on:
            raise EmitError("connecterror")
        result = self.inner(event)
        self.sent.append(event.id)
        return result


def test_only_paid_orders_reaching_the_minimum_are_emitted_once_across_pages(
    rt: WorkerRuntime,
    orders_sandbox: SandboxControl,
    make_orders: Callable[[], OrdersPlatformClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: 5 qualifying orders among a pending one and a small one (pages of 3)
    rows = [order_row()] * 2 + [order_row(status="pending"), order_row(total="10.00")]
    rows += [order_row(total="50.00")] * 3  # exactly the minimum qualifies
    orders = seed_orders(orders_sandbox.url, *rows)
    wanted = [str(o["id"]) for o in orders if o["status"] == "paid" and o["total"] != "10.00"]
    emitter = CountingEmitter(make_emitter())
    # when
    report = poll_orders(rt, make_orders(), emitter)
    # then: newest first, each once, every page read
    assert not report.stopped and report.pages == 2
    assert emitter.sent == [event_id_for(i) for i in reversed(wanted)]
    assert event_ids(rt, "orders-platform-order-") == sorted(event_id_for(i) for i in wanted)
    # and a second poll emits nothing
    again = CountingEmitter(make_emitter())
    assert poll_orders(rt, make_orders(), again).emitted == 0 and again.sent == []


def test_restart_mid_walk_neither_skips_nor_repeats(
    rt: WorkerRuntime,
    orders_sandbox: SandboxControl,
    make_orders: Callable[[], OrdersPlatformClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: 8 paid orders in pages of 3; the receiver fails on the 5th (mid page 2)
    ids = [str(o["id"]) for o in seed_orders(orders_sandbox.url, *[order_row()] * 8)]
    first = CountingEmitter(make_emitter(), fail_on=5)
    stopped = poll_orders(rt, make_orders(), first)
    watermark_after_stop = rt.redis.hgetall(SourceKeys(rt.keys, SOURCE).watermark)
    # when: a restarted worker (new client and emitter, Redis kept) polls again
    second = CountingEmitter(make_emitter())
    resumed = poll_orders(rt, make_orders(), second)
    # then
    assert stopped.stopped and len(first.sent) == 4 and watermark_after_stop == {}
    assert not resumed.stopped and resumed.duplicates == 0
    assert first.sent + second.sent == [event_id_for(i) for i in reversed(ids)]


def test_an_order_paid_later_is_emitted_by_the_next_poll(
    rt: WorkerRuntime,
    orders_sandbox: SandboxControl,
    orders_server: RunningServer,
    make_orders: Callable[[], OrdersPlatformClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: a pending order, polled once
    (order,) = seed_orders(orders_sandbox.url, order_row(status="pending"))
    assert poll_orders(rt, make_orders(), make_emitter()).emitted == 0
    # when: it is paid, then polled again
    state = orders_server.state
    with state.lock:
        record = state.orders[order["id"]]
        record.status, record.updated_at = "paid", state.clock() + 1
    emitter = CountingEmitter(make_emitter())
    poll_orders(rt, make_orders(), emitter)
    # then
    assert emitter.sent == [event_id_for(str(order["id"]))]
