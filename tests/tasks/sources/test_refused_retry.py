"""Refused source items held, retried and discarded: the pollers against the Ignico and
orders-platform sandboxes and the real receiver over HTTP, the store on real Redis.

The receiver refusing one event for good (a 422 of its own) is played by a wrapper that
refuses chosen event ids on their first emit and otherwise sends through the real emitter:
the same refusal ``HttpEmitter`` raises for a 422.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from sandboxes import SandboxControl
from tasks.runtime import WorkerRuntime
from tasks.sources.clients.ignico import IgnicoClient
from tasks.sources.clients.orders_platform import OrdersPlatformClient
from tasks.sources.common import SourceKeys
from tasks.sources.emit import EmitError, EmitResult, HttpEmitter, RewardEvent
from tasks.sources.ignico import event_id_for, poll_payouts, run_ignico, settle_payouts
from tasks.sources.orders_platform import SOURCE as ORDERS
from tasks.sources.orders_platform import event_id_for as order_event_id
from tasks.sources.orders_platform import poll_orders, run_orders
from tests.source_seeds import IgnicoSeeder, order_row, seed_orders
from tests.tasks.sources.conftest import event_ids
from tests.tasks.sources.test_ignico_poller import mark_units
from worker.stores.models import UnitState
from worker.stores.refused import HoldKind, RefusedItems

TRANSACTION = "/api/v1/users/wallets/transactions/*"


class RefusingEmitter:
    """Refuses the listed event ids once (as the edge's 422 does), sends the rest."""

    def __init__(self, inner: HttpEmitter, refuse: set[str]) -> None:
        self.inner, self.refuse = inner, set(refuse)
        self.sent: list[str] = []

    def __call__(self, event: RewardEvent) -> EmitResult:
        if event.id in self.refuse:
            self.refuse.discard(event.id)
            raise EmitError("validation-failed", status_code=422, retryable=False)
        result = self.inner(event)
        self.sent.append(event.id)
        return result


def test_a_refused_payout_is_held_with_its_reason_and_time(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given two payouts, the receiver refusing the first
    first, second = seeder.payouts(2)
    before = time.time()
    # when
    report = poll_payouts(rt, make_ignico(), RefusingEmitter(make_emitter(), {event_id_for(first)}))
    # then the refused one is held (id, kind, reason, time) and the other went through
    assert report.rejected == 1 and report.emitted == 1
    [held] = RefusedItems(rt.redis, rt.keys).held("ignico")
    assert (held.id, held.kind, held.reason) == (
        event_id_for(first),
        HoldKind.REFUSED,
        "validation-failed",
    )
    assert held.at is not None and before <= held.at <= time.time()
    assert event_ids(rt, "ignico-payout-") == [event_id_for(second)]


def test_a_retried_payout_is_emitted_by_the_next_run_and_then_settles(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given a refused payout an operator retries
    (tx,) = seeder.payouts(1)
    poll_payouts(rt, make_ignico(), RefusingEmitter(make_emitter(), {event_id_for(tx)}))
    store = RefusedItems(rt.redis, rt.keys)
    assert store.retry("ignico", event_id_for(tx), now=time.time(), actor="api") is not None

    # when the next beat run comes
    report = run_ignico(rt, make_ignico(), make_emitter())

    # then the payout was read again and emitted, nothing is held, and it is unsettled
    assert report.emitted == 1 and not report.stopped
    assert event_ids(rt, "ignico-payout-") == [event_id_for(tx)]
    assert store.held("ignico") == []
    names = SourceKeys(rt.keys, "ignico")
    assert rt.redis.hget(names.unsettled, event_id_for(tx)) == tx.encode()
    assert not rt.redis.smembers(names.retry)
    # and once its reward is fulfilled, the next run realizes it at Ignico
    mark_units(rt, event_id_for(tx), UnitState.FULFILLED)
    run_ignico(rt, make_ignico(), make_emitter())
    assert ignico_sandbox.issued(f"realized:{tx}") == 1


def test_a_retried_payout_refused_again_is_held_again(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given a refused payout, retried, that the receiver refuses again
    (tx,) = seeder.payouts(1)
    event_id = event_id_for(tx)
    poll_payouts(rt, make_ignico(), RefusingEmitter(make_emitter(), {event_id}))
    store = RefusedItems(rt.redis, rt.keys)
    store.retry("ignico", event_id, now=time.time(), actor="api")
    # when
    report = run_ignico(rt, make_ignico(), RefusingEmitter(make_emitter(), {event_id}))
    # then it is held again, not lost and not emitted
    assert report.rejected == 1 and [i.id for i in store.held("ignico")] == [event_id]
    assert event_ids(rt, "ignico-payout-") == []


def test_a_discarded_payout_is_never_emitted_again(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given a refused payout an operator discards
    (tx,) = seeder.payouts(1)
    poll_payouts(rt, make_ignico(), RefusingEmitter(make_emitter(), {event_id_for(tx)}))
    store = RefusedItems(rt.redis, rt.keys)
    store.discard("ignico", event_id_for(tx), now=time.time(), actor="api", reason="test")
    # when later runs walk the payouts again
    for _ in range(2):
        run_ignico(rt, make_ignico(), make_emitter())
    # then it stays out
    assert event_ids(rt, "ignico-payout-") == [] and store.held("ignico") == []


def test_a_failed_settlement_retried_is_settled_by_the_next_run(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given a fulfilled payout whose realize Ignico answered 404 once
    (tx,) = seeder.payouts(1)
    poll_payouts(rt, make_ignico(), make_emitter())
    mark_units(rt, event_id_for(tx), UnitState.FULFILLED)
    ignico_sandbox.set_faults(
        {"method": "PUT", "path": TRANSACTION, "kind": "permanent", "status": 404, "times": 1}
    )
    assert settle_payouts(rt, make_ignico()).settled == {"missing": 1}
    store = RefusedItems(rt.redis, rt.keys)
    [held] = store.held("ignico")
    assert (held.id, held.kind, held.reason) == (
        tx,
        HoldKind.SETTLE_FAILED,
        "transaction not found",
    )

    # when an operator retries it and the next run settles
    store.retry("ignico", tx, now=time.time(), actor="api")
    report = settle_payouts(rt, make_ignico())

    # then it is realized at Ignico and nothing is held
    assert report.settled == {"realized": 1}
    assert ignico_sandbox.issued(f"realized:{tx}") == 1
    assert store.held("ignico") == []


def test_a_retried_order_is_read_again_and_emitted(
    rt: WorkerRuntime,
    orders_sandbox: SandboxControl,
    make_orders: Callable[[], OrdersPlatformClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given a paid order the receiver refused, retried by an operator
    (order,) = seed_orders(orders_sandbox.url, order_row())
    event_id = order_event_id(str(order["id"]))
    report = poll_orders(rt, make_orders(), RefusingEmitter(make_emitter(), {event_id}))
    assert report.rejected == 1
    store = RefusedItems(rt.redis, rt.keys)
    [held] = store.held(ORDERS)
    assert (held.id, held.reason) == (event_id, "validation-failed")
    store.retry(ORDERS, event_id, now=time.time(), actor="api")

    # when the next run comes (its walk alone would skip the order: already seen)
    again = run_orders(rt, make_orders(), make_emitter())

    # then the order was read by id and emitted; nothing is held or queued
    assert again.emitted == 1 and not again.stopped
    assert event_ids(rt, "orders-platform-order-") == [event_id]
    assert store.held(ORDERS) == []
    assert not rt.redis.smembers(SourceKeys(rt.keys, ORDERS).retry)


def test_a_retried_order_that_no_longer_qualifies_is_held_again_saying_so(
    rt: WorkerRuntime,
    orders_sandbox: SandboxControl,
    make_orders: Callable[[], OrdersPlatformClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given a refused order, refunded at the platform, then retried
    (order,) = seed_orders(orders_sandbox.url, order_row())
    event_id = order_event_id(str(order["id"]))
    poll_orders(rt, make_orders(), RefusingEmitter(make_emitter(), {event_id}))
    client = make_orders()
    refunded = httpx.put(
        f"{orders_sandbox.url}/api/orders/{order['id']}",
        json={"status": "refunded"},
        headers={"Authorization": f"Bearer {client._bearer().reveal()}"},
    )
    assert refunded.status_code == 200
    store = RefusedItems(rt.redis, rt.keys)
    store.retry(ORDERS, event_id, now=time.time(), actor="api")
    # when
    run_orders(rt, client, make_emitter())
    # then
    [held] = store.held(ORDERS)
    assert (held.id, held.reason) == (event_id, "no longer qualifies")
    assert event_ids(rt, "orders-platform-order-") == []
    raw = rt.redis.hget(SourceKeys(rt.keys, ORDERS).rejected, event_id)
    assert raw is not None and json.loads(raw)["at"]
