"""Test helpers: put data into the source sandboxes over their public HTTP APIs.

Seeding goes through the same endpoints a vendor's own tooling would use (Ignico
``POST /users`` and ``POST /users/wallets/transactions``), never through our clients, so a
client bug cannot hide a sandbox bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes import ignico as ignico_sandbox_app
from sandboxes.server import RunningServer

JSONAPI = "application/vnd.api+json"
# The credentials of the Ignico sandbox the fixtures below serve.
IGNICO_CLIENT_ID = "test-ignico-client-5b1"
IGNICO_CLIENT_SECRET = "test-ignico-secret-0c9d7e"


# Fixtures (registered for every test by ``pytest_plugins`` in tests/conftest.py): an
# Ignico sandbox per module, reset for each test, and a seeder signed in to it.
@pytest.fixture(scope="module")
def ignico_server() -> Iterator[RunningServer]:
    app = ignico_sandbox_app.create_app(
        client_id=IGNICO_CLIENT_ID, client_secret=IGNICO_CLIENT_SECRET
    )
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture
def ignico_sandbox(ignico_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(ignico_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def seeder(ignico_sandbox: SandboxControl) -> Iterator[IgnicoSeeder]:
    seeds = IgnicoSeeder(ignico_sandbox.url, IGNICO_CLIENT_ID, IGNICO_CLIENT_SECRET)
    yield seeds
    seeds.close()


class IgnicoSeeder:
    """Creates users and payouts in an Ignico sandbox at ``url`` (server root)."""

    def __init__(self, url: str, client_id: str, client_secret: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/api/v1", timeout=5.0)
        token = self.http.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            },
        ).json()["access_token"]
        self.http.headers.update(
            {"Authorization": f"Bearer {token}", "Content-Type": JSONAPI, "Accept": JSONAPI}
        )

    def user(self, email: str, first: str = "Ada", last: str = "Lovelace") -> None:
        attributes = {
            "email": email,
            "country": "GB",
            "subject": {"person": {"firstName": first, "lastName": last}},
        }
        self._post("/users", "user", attributes)

    def transaction(
        self, email: str, kind: str = "sub", amount: str = "10.00", realized: bool = False
    ) -> str:
        attributes = {
            "user": {"email": email},
            "type": kind,
            "amount": amount,
            "description": "payout",
            "realized": realized,
        }
        return str(self._post("/users/wallets/transactions", "transaction", attributes)["id"])

    def payouts(self, count: int, email: str = "ada@example.com") -> list[str]:
        """``count`` pending payouts of one user (created first); their ids, ascending."""
        self.user(email)
        return [self.transaction(email) for _ in range(count)]

    def get(self, transaction_id: str) -> dict[str, Any]:
        response = self.http.get(f"/users/wallets/transactions/{transaction_id}")
        response.raise_for_status()
        attributes: dict[str, Any] = response.json()["data"]["attributes"]
        return attributes

    def _post(self, path: str, kind: str, attributes: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json={"data": {"type": kind, "attributes": attributes}})
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    def close(self) -> None:
        self.http.close()


class MemoryTokenStore:
    """A refresh-token store in memory (the poller keeps it in Redis)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.saved: list[str] = []

    def load(self) -> str | None:
        return self.token

    def save(self, refresh_token: str) -> None:
        self.token = refresh_token
        self.saved.append(refresh_token)


def seed_orders(url: str, *rows: dict[str, Any]) -> list[dict[str, Any]]:
    """Create orders through the orders-platform sandbox's ``/_sandbox/orders``."""
    response = httpx.post(f"{url}/_sandbox/orders", json={"orders": list(rows)}, timeout=5.0)
    response.raise_for_status()
    orders: list[dict[str, Any]] = response.json()["orders"]
    return orders


def order_row(total: str = "80.00", status: str = "paid", email: str = "ada@example.com"):
    return {
        "status": status,
        "total": total,
        "customer": {"email": email, "first_name": "Ada", "last_name": "Lovelace"},
    }


def connect_with_code(client: Any, state: str = "st-1") -> None:
    """Run the authorization-code flow against a sandbox that approves at once."""
    response = httpx.get(client.authorize_url(state), timeout=5.0)
    location = httpx.URL(response.headers["Location"])
    assert location.params["state"] == state
    client.exchange_code(location.params["code"])
