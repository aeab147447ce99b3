"""Fixtures for sandbox contract tests: real HTTP servers on loopback and plain httpx clients.

Contract tests talk to the sandboxes the way a vendor integration would, without our client
classes, so a bug in a client cannot hide a bug in the simulator.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes import ifeelgoods as ifeelgoods_app
from sandboxes import rewardops as rewardops_app
from sandboxes.server import RunningServer

IFG_KEY = "contract-key"
IFG_SECRET = "contract-secret-31f2"
RO_ID = "contract-client"
RO_SECRET = "contract-client-secret-77a0"


@pytest.fixture(scope="session")
def ifg_server() -> Iterator[RunningServer]:
    with serve_in_thread(ifeelgoods_app.create_app(api_key=IFG_KEY, api_secret=IFG_SECRET)) as s:
        yield s


@pytest.fixture(scope="session")
def ro_server() -> Iterator[RunningServer]:
    with serve_in_thread(rewardops_app.create_app(client_id=RO_ID, client_secret=RO_SECRET)) as s:
        yield s


@pytest.fixture
def ifg_control(ifg_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(ifg_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def ro_control(ro_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(ro_server.url) as control:
        control.reset()
        control.configure(delivery_delay=0)
        yield control


@pytest.fixture
def ifg(ifg_control: SandboxControl) -> Iterator[httpx.Client]:
    """Header-authenticated client rooted at ``/fulfillment/v2``."""
    headers = {"Api-Key": IFG_KEY, "Api-Secret": IFG_SECRET}
    with httpx.Client(
        base_url=f"{ifg_control.url}/fulfillment/v2", headers=headers, timeout=5.0
    ) as client:
        yield client


@pytest.fixture
def ifg_anon(ifg_control: SandboxControl) -> Iterator[httpx.Client]:
    """Unauthenticated client rooted at the server (for /oauth/token and auth checks)."""
    with httpx.Client(base_url=ifg_control.url, timeout=5.0) as client:
        yield client


@pytest.fixture
def ro_anon(ro_control: SandboxControl) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{ro_control.url}/api/v4", timeout=5.0) as client:
        yield client


@pytest.fixture
def ro(ro_anon: httpx.Client) -> httpx.Client:
    """Bearer-authenticated client rooted at ``/api/v4`` (token minted per test)."""
    response = ro_anon.post(
        "/auth/token", auth=(RO_ID, RO_SECRET), data={"grant_type": "client_credentials"}
    )
    ro_anon.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return ro_anon


@pytest.fixture
def ifg_creds() -> tuple[str, str]:
    """(api key, api secret) the Ifeelgoods sandbox accepts."""
    return IFG_KEY, IFG_SECRET


@pytest.fixture
def ro_creds() -> tuple[str, str]:
    """(client id, client secret) the RewardOps sandbox accepts."""
    return RO_ID, RO_SECRET
