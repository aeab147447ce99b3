"""OrdersPlatformClient against the running orders-platform sandbox (providers.md 5)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes import orders_platform as orders_sandbox_app
from sandboxes.server import RunningServer
from tasks.http.errors import PermanentProviderError, ProviderAuthError
from tasks.sources.clients.orders_platform import OrdersPlatformClient
from tests.source_seeds import MemoryTokenStore, connect_with_code, order_row, seed_orders

CLIENT_ID = "test-orders-client-2f"
CLIENT_SECRET = "test-orders-secret-91d0c"
REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def orders_server() -> Iterator[RunningServer]:
    app = orders_sandbox_app.create_app(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT
    )
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture
def orders_sandbox(orders_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(orders_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def store() -> MemoryTokenStore:
    return MemoryTokenStore()


@pytest.fixture
def client(
    orders_sandbox: SandboxControl, store: MemoryTokenStore
) -> Iterator[OrdersPlatformClient]:
    made = OrdersPlatformClient(
        orders_sandbox.url, CLIENT_ID, CLIENT_SECRET, REDIRECT, store, timeout=2.0
    )
    yield made
    made.close()


def test_code_exchange_stores_a_refresh_token(
    client: OrdersPlatformClient, store: MemoryTokenStore, orders_sandbox: SandboxControl
) -> None:
    # given / when
    connect_with_code(client)
    # then
    assert store.token and orders_sandbox.issued("code") == 1
    assert store.token not in repr(client)


def test_an_unknown_code_is_refused_without_echoing_it(client: OrdersPlatformClient) -> None:
    # given
    code = "not-a-code-7d1e"
    # when / then
    with pytest.raises(PermanentProviderError) as caught:
        client.exchange_code(code)
    assert caught.value.reason == "invalid_grant"
    assert code not in str(caught.value) + repr(caught.value)


def test_listing_before_connect_says_not_connected(client: OrdersPlatformClient) -> None:
    # given / when / then
    with pytest.raises(ProviderAuthError) as caught:
        client.list_orders()
    assert caught.value.reason == "not_connected"


def test_pages_are_walked_with_sort_descending(
    client: OrdersPlatformClient, orders_sandbox: SandboxControl
) -> None:
    # given: 7 orders, 3 per page
    ids = [str(o["id"]) for o in seed_orders(orders_sandbox.url, *[order_row()] * 7)]
    connect_with_code(client)
    # when
    pages = [client.list_orders(sort="-id", page=n, per_page=3) for n in (1, 2, 3)]
    # then
    assert [len(p.items) for p in pages] == [3, 3, 1]
    assert [p.has_next for p in pages] == [True, True, False]
    assert [o.id for p in pages for o in p.items] == list(reversed(ids))
    assert pages[0].total == 7 and pages[0].last_page == 3


def test_filter_takes_a_comma_separated_or_list(
    client: OrdersPlatformClient, orders_sandbox: SandboxControl
) -> None:
    # given
    seed_orders(
        orders_sandbox.url,
        order_row(status="paid"),
        order_row(status="pending"),
        order_row(status="refunded"),
    )
    connect_with_code(client)
    # when
    page = client.list_orders({"status": ["paid", "refunded"]})
    # then
    assert sorted(o.status for o in page.items) == ["paid", "refunded"]


def test_expired_access_token_is_refreshed_once_and_the_refresh_token_rotated(
    client: OrdersPlatformClient, store: MemoryTokenStore, orders_sandbox: SandboxControl
) -> None:
    # given: connected, one order
    seed_orders(orders_sandbox.url, order_row())
    connect_with_code(client)
    first_refresh = store.token
    # when: the platform expires every access token
    orders_sandbox.expire_tokens()
    page = client.list_orders()
    # then: one refresh grant, and the rotated refresh token was saved
    assert len(page.items) == 1
    assert orders_sandbox.issued("refresh") == 1
    assert store.token != first_refresh and len(store.saved) == 2


def test_a_restarted_client_refreshes_from_the_stored_token(
    orders_sandbox: SandboxControl, client: OrdersPlatformClient, store: MemoryTokenStore
) -> None:
    # given: connected by one client; a new process has only the store
    connect_with_code(client)
    fresh = OrdersPlatformClient(orders_sandbox.url, CLIENT_ID, CLIENT_SECRET, REDIRECT, store)
    # when
    page = fresh.list_orders()
    # then
    assert page.items == () and orders_sandbox.issued("refresh") == 1
    fresh.close()
