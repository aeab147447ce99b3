"""Fixtures for the reward-source pollers: the Ignico sandbox and the receiver, both over
real HTTP on loopback, and a worker runtime on the tests' Redis.

The receiver is the real edge (``webhooks.create_app``) on the same settings, so every
emitted event goes through signature check, validation and the inbox dedupe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes import orders_platform as orders_sandbox_app
from sandboxes.server import RunningServer
from tasks.runtime import WorkerRuntime, build_runtime
from tasks.sources.clients.ignico import IgnicoClient
from tasks.sources.clients.orders_platform import OrdersPlatformClient
from tasks.sources.common import SourceKeys
from tasks.sources.emit import HttpEmitter
from tasks.sources.orders_platform import SOURCE as ORDERS_SOURCE
from tasks.sources.orders_platform import token_store
from tests.conftest import TEST_EVENT_SECRET
from tests.source_seeds import IGNICO_CLIENT_ID, IGNICO_CLIENT_SECRET, connect_with_code
from webhooks import create_app
from worker.config import Settings

IGNICO_ID, IGNICO_SECRET = IGNICO_CLIENT_ID, IGNICO_CLIENT_SECRET
ORDERS_ID = "test-src-orders-3aa"
ORDERS_SECRET = "test-src-orders-secret-c41"
ORDERS_REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def orders_server() -> Iterator[RunningServer]:
    app = orders_sandbox_app.create_app(
        client_id=ORDERS_ID, client_secret=ORDERS_SECRET, redirect_uri=ORDERS_REDIRECT
    )
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture
def orders_sandbox(orders_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(orders_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def source_settings(
    settings: Settings, ignico_sandbox: SandboxControl, orders_sandbox: SandboxControl
) -> Settings:
    return replace(
        settings,
        ignico_base_url=f"{ignico_sandbox.url}/api/v1",
        ignico_client_id=IGNICO_ID,
        ignico_client_secret=IGNICO_SECRET,
        orders_base_url=orders_sandbox.url,
        orders_client_id=ORDERS_ID,
        orders_client_secret=ORDERS_SECRET,
        orders_redirect_uri=ORDERS_REDIRECT,
        source_page_size=3,
    )


@pytest.fixture
def receiver(source_settings: Settings) -> Iterator[str]:
    """The real edge on the same settings; yields its base URL."""
    with serve_in_thread(create_app(source_settings), log_requests=False) as server:
        yield server.url


@pytest.fixture
def rt(source_settings: Settings) -> Iterator[WorkerRuntime]:
    runtime = build_runtime(source_settings)
    yield runtime
    runtime.redis.close()


@pytest.fixture
def make_ignico(source_settings: Settings) -> Iterator[Callable[[], IgnicoClient]]:
    """A fresh client per call: a new one stands for a restarted worker process."""
    made: list[IgnicoClient] = []

    def make() -> IgnicoClient:
        client = IgnicoClient.from_settings(source_settings, timeout=2.0)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def make_orders(
    source_settings: Settings, rt: WorkerRuntime
) -> Iterator[Callable[[], OrdersPlatformClient]]:
    """A fresh client per call (a restarted process); the first one connects."""
    made: list[OrdersPlatformClient] = []
    store = token_store(rt.redis, SourceKeys(rt.keys, ORDERS_SOURCE))

    def make() -> OrdersPlatformClient:
        client = OrdersPlatformClient.from_settings(source_settings, store, timeout=2.0)
        if not made:
            connect_with_code(client)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def make_emitter(receiver: str) -> Iterator[Callable[[], HttpEmitter]]:
    made: list[HttpEmitter] = []

    def make() -> HttpEmitter:
        emitter = HttpEmitter(receiver, TEST_EVENT_SECRET)
        made.append(emitter)
        return emitter

    yield make
    for emitter in made:
        emitter.close()


def event_ids(rt: WorkerRuntime, prefix: str) -> list[str]:
    """Ids of the events the inbox holds whose id starts with ``prefix``."""
    pattern = f"{rt.keys.prefix}:event:{prefix}*"
    found: list[Any] = list(rt.redis.scan_iter(match=pattern, count=1000))
    return sorted(key.decode().split(":event:", 1)[1] for key in found)
