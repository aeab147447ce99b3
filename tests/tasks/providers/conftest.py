"""Fixtures for provider-client tests: both sandboxes as real HTTP servers on loopback.

The servers start once per session on ephemeral ports; every test gets them reset (no
resources, tokens, counters or fault rules) through the ``*_sandbox`` control fixtures.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes import ifeelgoods as ifeelgoods_sandbox_app
from sandboxes import rewardops as rewardops_sandbox_app
from sandboxes.server import RunningServer
from tasks.providers import IfeelgoodsClient, IfeelgoodsUser, Member, RewardOpsClient

IFG_API_KEY = "test-ifg-key-4d1a"
IFG_API_SECRET = "test-ifg-secret-9c7e51b2f0"
RO_CLIENT_ID = "test-ro-client-83b2"
RO_CLIENT_SECRET = "test-ro-secret-e6f04a9d17"
PROMOTION_ID = 1
SKU = "AMZ-25USD-US"
OTHER_SKU = "APP-ITU-10USD-US"
PROGRAM_ID = 12
GIFT_TOKEN = "tok-gift-25"
CLIENT_TIMEOUT_SECONDS = 2.0  # generous for loopback, far below the pytest timeout
SHORT_TIMEOUT_SECONDS = 0.3  # for commit_then_timeout runs: the sandbox answers after 1 s
COMMIT_DELAY_SECONDS = 1.0


@pytest.fixture(scope="session")
def ifeelgoods_server() -> Iterator[RunningServer]:
    app = ifeelgoods_sandbox_app.create_app(api_key=IFG_API_KEY, api_secret=IFG_API_SECRET)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture(scope="session")
def rewardops_server() -> Iterator[RunningServer]:
    app = rewardops_sandbox_app.create_app(client_id=RO_CLIENT_ID, client_secret=RO_CLIENT_SECRET)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def ifeelgoods_sandbox(ifeelgoods_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(ifeelgoods_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def rewardops_sandbox(rewardops_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(rewardops_server.url) as control:
        control.reset()
        control.configure(delivery_delay=0)
        yield control


@pytest.fixture
def make_ifeelgoods_client(
    ifeelgoods_sandbox: SandboxControl,
) -> Iterator[Callable[..., IfeelgoodsClient]]:
    clients: list[IfeelgoodsClient] = []

    def make(timeout: float = CLIENT_TIMEOUT_SECONDS, **overrides: str) -> IfeelgoodsClient:
        client = IfeelgoodsClient(
            f"{ifeelgoods_sandbox.url}/fulfillment/v2",
            overrides.get("api_key", IFG_API_KEY),
            overrides.get("api_secret", IFG_API_SECRET),
            timeout=timeout,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def make_rewardops_client(
    rewardops_sandbox: SandboxControl,
) -> Iterator[Callable[..., RewardOpsClient]]:
    clients: list[RewardOpsClient] = []

    def make(timeout: float = CLIENT_TIMEOUT_SECONDS, **overrides: str) -> RewardOpsClient:
        client = RewardOpsClient(
            f"{rewardops_sandbox.url}/api/v4",
            overrides.get("client_id", RO_CLIENT_ID),
            overrides.get("client_secret", RO_CLIENT_SECRET),
            timeout=timeout,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def ifeelgoods_client(make_ifeelgoods_client: Callable[..., IfeelgoodsClient]) -> IfeelgoodsClient:
    return make_ifeelgoods_client()


@pytest.fixture
def rewardops_client(make_rewardops_client: Callable[..., RewardOpsClient]) -> RewardOpsClient:
    return make_rewardops_client()


@pytest.fixture
def user() -> IfeelgoodsUser:
    return IfeelgoodsUser(email="ada@example.com", first_name="Ada", last_name="Lovelace")


@pytest.fixture
def member() -> Member:
    return Member(id="member-42", full_name="Ada Lovelace", email="ada@example.com")


@pytest.fixture
def provider_secrets() -> tuple[str, ...]:
    """Every credential the provider fixtures use, plus the Basic header derived from them."""
    basic = base64.b64encode(f"{RO_CLIENT_ID}:{RO_CLIENT_SECRET}".encode()).decode()
    return IFG_API_SECRET, RO_CLIENT_SECRET, basic
