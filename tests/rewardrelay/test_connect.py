"""``rewardrelay connect orders-platform``: the authorization-code flow against the sandbox."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import redis

from rewardrelay.connect import ConnectError, connect_orders_platform
from sandboxes import orders_platform as orders_sandbox_app
from sandboxes import serve_in_thread
from sandboxes.server import RunningServer
from worker.config import Settings, SettingsError
from worker.stores.codec import text

CLIENT_ID = "test-connect-client-1"
CLIENT_SECRET = "test-connect-secret-88e1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redirect_uri() -> str:
    return f"http://127.0.0.1:{free_port()}/callback"


@pytest.fixture
def orders_server(redirect_uri: str) -> Iterator[RunningServer]:
    app = orders_sandbox_app.create_app(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=redirect_uri
    )
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture
def connect_settings(settings: Settings, orders_server: RunningServer, redirect_uri: str):
    return replace(
        settings,
        orders_base_url=orders_server.url,
        orders_client_id=CLIENT_ID,
        orders_client_secret=CLIENT_SECRET,
        orders_redirect_uri=redirect_uri,
    )


def open_in_browser(url: str) -> None:
    """What the operator's browser does: follow the consent redirect to our listener."""
    threading.Thread(
        target=lambda: httpx.get(url, follow_redirects=True, timeout=5.0), daemon=True
    ).start()


def test_connect_stores_the_refresh_token_in_redis(
    connect_settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # given / when
    connect_orders_platform(connect_settings, on_url=open_in_browser, timeout=10)
    # then
    key = f"{connect_settings.key_prefix}:source:orders-platform:token:refresh"
    token = redis_client.get(key)
    assert token
    assert text(token) not in capsys.readouterr().out


def test_a_redirect_with_a_foreign_state_is_refused(
    connect_settings: Settings, redis_client: redis.Redis, redirect_uri: str
) -> None:
    # given: something else hits the listener first with a forged state
    def forged(_url: str) -> None:
        threading.Thread(
            target=lambda: httpx.get(f"{redirect_uri}?code=x&state=forged", timeout=5.0),
            daemon=True,
        ).start()

    # when / then
    with pytest.raises(ConnectError, match="state"):
        connect_orders_platform(connect_settings, on_url=forged, timeout=10)
    key = f"{connect_settings.key_prefix}:source:orders-platform:token:refresh"
    assert redis_client.get(key) is None


def test_no_redirect_times_out(connect_settings: Settings) -> None:
    # given / when / then
    with pytest.raises(ConnectError, match="no redirect"):
        connect_orders_platform(connect_settings, on_url=lambda _url: None, timeout=0.5)


def test_connect_needs_a_loopback_redirect(connect_settings: Settings) -> None:
    # given
    remote = replace(connect_settings, orders_redirect_uri="https://example.com/callback")
    # when / then
    with pytest.raises(SettingsError) as caught:
        connect_orders_platform(remote, on_url=open_in_browser, timeout=1)
    assert caught.value.variable == "ORDERS_REDIRECT_URI"
