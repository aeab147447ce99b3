"""End to end, reward sources: the Ignico payout poller run by real beat and worker
processes, through the receiver, the relay and the Ifeelgoods sandbox, and back to Ignico.

Each test ends on the sandboxes' counters: one provider order per payout or order, each
payout realized or cancelled once, each Coniq reward recorded back once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes import coniq as coniq_sandbox_app
from sandboxes import orders_platform as orders_sandbox_app
from sandboxes.server import RunningServer
from tasks.providers.adapters import provider_key
from tasks.sources import orders_platform as orders_source
from tasks.sources.clients.orders_platform import OrdersPlatformClient
from tasks.sources.common import SourceKeys
from tasks.sources.coniq_outbound import reference_for
from tasks.sources.ignico import event_id_for
from tests.conftest import TEST_ADMIN_TOKEN
from tests.integration.conftest import Stack, coniq_reward
from tests.source_seeds import (
    IGNICO_CLIENT_ID,
    IGNICO_CLIENT_SECRET,
    IgnicoSeeder,
    connect_with_code,
    order_row,
    seed_orders,
)

pytestmark = pytest.mark.integration

IGNICO_ID, IGNICO_SECRET = IGNICO_CLIENT_ID, IGNICO_CLIENT_SECRET
ORDERS_ID, ORDERS_SECRET = "it-orders-client", "it-orders-secret-value-0001"
ORDERS_REDIRECT = "http://127.0.0.1:9/callback"
CONIQ_KEY = "it-coniq-api-key-0001"
REDEMPTIONS = "/fulfillment/v2/promotions/*/redemptions/actions/redeem"  # create-and-redeem


@pytest.fixture
def source_stack(make_stack: Callable[..., Stack], ignico_sandbox: SandboxControl) -> Stack:
    """Edge and relay in this process; worker and beat (polling every 0.5 s) as processes."""
    stack = make_stack(
        {
            "IGNICO_BASE_URL": f"{ignico_sandbox.url}/api/v1",
            "IGNICO_CLIENT_ID": IGNICO_ID,
            "IGNICO_CLIENT_SECRET": IGNICO_SECRET,
            "SOURCE_POLL_SECONDS": "0.5",
            "SOURCE_PAGE_SIZE": "2",
        },
        worker=False,
    )
    stack.env["RECEIVER_URL"] = stack.edge_url  # the edge listens on a port chosen at start
    stack.start_worker()
    stack.start_beat()
    return stack


def wait_for(check: Callable[[], Any], stack: Stack, timeout: float = 45) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"condition not met in {timeout}s\n{stack.worker_logs()[-4000:]}")


def settled_view(stack: Stack, event_id: str) -> dict[str, Any]:
    """The fulfilment view once the poller emitted ``event_id`` and its units are terminal."""
    wait_for(lambda: stack.redis.exists(stack.keys.event(event_id)), stack)
    return stack.wait_terminal(event_id, timeout=45)


def test_pending_payouts_are_fulfilled_once_and_realized(
    source_stack: Stack,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    ifeelgoods: SandboxControl,
) -> None:
    # given five pending payouts (three pages of two) while beat polls
    ids = seeder.payouts(5)

    # when every payout has been realized at Ignico
    wait_for(lambda: all(seeder.get(tx)["realized"] for tx in ids), source_stack)

    # then each payout became one event, one fulfilled unit, one Ifeelgoods order,
    # and one realize call at Ignico
    for tx in ids:
        view = source_stack.fulfillment(event_id_for(tx))
        [unit] = view["units"]
        assert unit["state"] == "fulfilled"
        assert ifeelgoods.issued(provider_key(unit["id"])) == 1
        assert ignico_sandbox.issued(f"realized:{tx}") == 1
        assert ignico_sandbox.issued(f"cancelled:{tx}") == 0
    # and the Ifeelgoods sandbox issued nothing else: one order per payout in all
    assert sum(ifeelgoods.counters()["issued"].values()) == len(ids)


def test_discarded_dead_letter_cancels_the_payout_with_the_reason(
    source_stack: Stack,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    ifeelgoods: SandboxControl,
) -> None:
    # given Ifeelgoods refuses every order for good
    ifeelgoods.set_faults(
        {
            "method": "POST",
            "path": REDEMPTIONS,
            "kind": "permanent",
            "status": 422,
            "error": "invalid_user",
        }
    )
    (tx,) = seeder.payouts(1)
    event_id = event_id_for(tx)
    view = settled_view(source_stack, event_id)
    [unit] = view["units"]
    assert unit["state"] == "dead_lettered"

    # when an operator discards the dead letter with a reason
    response = source_stack.http.request(
        "DELETE",
        f"{source_stack.edge_url}/dead-letters/{unit['id']}",
        headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"},
        json={"reason": "member left the programme"},
    )
    assert response.status_code == 200

    # then the payout is cancelled at Ignico once, with that reason; no order was issued
    wait_for(lambda: seeder.get(tx)["cancelled"], source_stack)
    assert seeder.get(tx)["cancellationReason"] == "member left the programme"
    assert (
        ignico_sandbox.issued(f"cancelled:{tx}") == 1
        and ignico_sandbox.issued(f"realized:{tx}") == 0
    )
    assert ifeelgoods.issued(provider_key(unit["id"])) == 0


@pytest.fixture(scope="module")
def orders_server() -> Iterator[RunningServer]:
    app = orders_sandbox_app.create_app(
        client_id=ORDERS_ID, client_secret=ORDERS_SECRET, redirect_uri=ORDERS_REDIRECT
    )
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture
def orders(orders_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(orders_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def orders_stack(make_stack: Callable[..., Stack], orders: SandboxControl) -> Stack:
    """Connected once (refresh token in Redis), then worker and beat as processes."""
    stack = make_stack(
        {
            "ORDERS_BASE_URL": orders.url,
            "ORDERS_CLIENT_ID": ORDERS_ID,
            "ORDERS_CLIENT_SECRET": ORDERS_SECRET,
            "ORDERS_REDIRECT_URI": ORDERS_REDIRECT,
            "SOURCE_POLL_SECONDS": "0.5",
            "SOURCE_PAGE_SIZE": "2",
        },
        worker=False,
    )
    names = SourceKeys(stack.keys, orders_source.SOURCE)
    client = OrdersPlatformClient(
        orders.url,
        ORDERS_ID,
        ORDERS_SECRET,
        ORDERS_REDIRECT,
        orders_source.token_store(stack.redis, names),
    )
    connect_with_code(client)  # what `rewardrelay connect orders-platform` does
    client.close()
    stack.env["RECEIVER_URL"] = stack.edge_url
    stack.start_worker()
    stack.start_beat()
    return stack


def test_qualifying_orders_are_fulfilled_once_through_rewardops(
    orders_stack: Stack, orders: SandboxControl, rewardops: SandboxControl
) -> None:
    # given four paid orders of 80 (two pages) and two that do not qualify
    seeded = seed_orders(
        orders.url,
        *[order_row()] * 4,
        order_row(status="pending"),
        order_row(total="5.00"),
    )
    paid = [str(o["id"]) for o in seeded[:4]]
    skipped = [str(o["id"]) for o in seeded[4:]]

    # when each qualifying order's event is terminal
    views = [settled_view(orders_stack, orders_source.event_id_for(i)) for i in paid]

    # then each became one fulfilled RewardOps order, and the others nothing
    for view in views:
        [unit] = view["units"]
        assert unit["state"] == "fulfilled" and unit["provider"] == "rewardops"
        assert rewardops.issued(provider_key(unit["id"])) == 1
    for order_id in skipped:
        key = orders_stack.keys.event(orders_source.event_id_for(order_id))
        assert not orders_stack.redis.exists(key)
    assert sum(rewardops.counters()["issued"].values()) == len(paid)


@pytest.fixture(scope="module")
def coniq_server() -> Iterator[RunningServer]:
    app = coniq_sandbox_app.create_app(api_key=CONIQ_KEY)
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture
def coniq(coniq_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(coniq_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def coniq_stack(make_stack: Callable[..., Stack], coniq: SandboxControl) -> Stack:
    stack = make_stack(
        {
            "CONIQ_BASE_URL": coniq.url,
            "CONIQ_API_KEY": CONIQ_KEY,
            "CONIQ_RECORD_OFFER_ID": "9001",
            "SOURCE_POLL_SECONDS": "0.5",
        },
        worker=False,
    )
    stack.start_worker()
    stack.start_beat()
    return stack


@pytest.mark.parametrize("coniq_failures", [0, 3])
def test_fulfilled_coniq_reward_is_recorded_back_once_and_never_reissued(
    coniq_stack: Stack, coniq: SandboxControl, ifeelgoods: SandboxControl, coniq_failures: int
) -> None:
    # given Coniq fails the first attempts (503) when asked to
    if coniq_failures:
        coniq.set_faults(
            {"kind": "status", "status": 503, "path": "/subscription/*", "times": coniq_failures}
        )
    event = coniq_reward(offer_id="1001")

    # when the reward is delivered and fulfilled
    assert coniq_stack.send(event).status_code == 202
    [unit] = coniq_stack.wait_terminal(event["id"])["units"]
    reference = reference_for(unit["id"])
    wait_for(lambda: coniq.issued(reference) == 1, coniq_stack)

    # then it was recorded in Coniq once, and the reward was issued once and stays fulfilled
    time.sleep(1.5)  # a few more drains: nothing more may happen
    assert coniq.issued(reference) == 1
    assert ifeelgoods.issued(provider_key(unit["id"])) == 1
    assert coniq_stack.fulfillment(event["id"])["units"][0]["state"] == "fulfilled"
    assert sum(coniq.counters()["faults_injected"].values()) == coniq_failures
