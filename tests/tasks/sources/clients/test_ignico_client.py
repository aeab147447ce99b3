"""IgnicoClient against the running Ignico sandbox over HTTP (providers.md section 4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandboxes import SandboxControl
from sandboxes.server import RunningServer
from tasks.http.errors import (
    ConflictError,
    NotFoundError,
    ProviderAuthError,
    TransientProviderError,
)
from tasks.sources.clients.ignico import IgnicoClient
from tests.source_seeds import IGNICO_CLIENT_ID, IGNICO_CLIENT_SECRET, IgnicoSeeder

CLIENT_ID, CLIENT_SECRET = IGNICO_CLIENT_ID, IGNICO_CLIENT_SECRET
TRANSACTIONS = "/api/v1/users/wallets/transactions"


@pytest.fixture
def client(ignico_sandbox: SandboxControl) -> Iterator[IgnicoClient]:
    ignico = IgnicoClient(f"{ignico_sandbox.url}/api/v1", CLIENT_ID, CLIENT_SECRET, timeout=2.0)
    yield ignico
    ignico.close()


def token_requests(server: RunningServer) -> int:
    return len(server.state.tokens)


def test_pending_payouts_walks_several_pages_in_id_order(
    client: IgnicoClient, seeder: IgnicoSeeder
) -> None:
    # given: 7 pending payouts, page size 3 → pages of 3, 3, 1
    ids = seeder.payouts(7)
    # when
    pages = [client.pending_payouts(page=n, page_size=3) for n in (1, 2, 3)]
    # then
    assert [len(p.items) for p in pages] == [3, 3, 1]
    assert [p.has_next for p in pages] == [True, True, False]
    assert [tx.id for p in pages for tx in p.items] == ids
    assert pages[0].total == 7 and pages[0].last == 3
    first = pages[0].items[0]
    assert first.user is not None and first.user.email == "ada@example.com"
    assert first.user.first_name == "Ada" and first.is_pending_payout


def test_pending_payouts_filter_out_credits_realized_and_cancelled(
    client: IgnicoClient, seeder: IgnicoSeeder
) -> None:
    # given: one of each kind
    seeder.user("ada@example.com")
    pending = seeder.transaction("ada@example.com")
    seeder.transaction("ada@example.com", kind="add")
    seeder.transaction("ada@example.com", realized=True)
    cancelled = seeder.transaction("ada@example.com")
    client.cancel(cancelled, "duplicate claim")
    # when
    page = client.pending_payouts()
    # then
    assert [tx.id for tx in page.items] == [pending]


def test_added_since_filter_excludes_older_payouts(
    client: IgnicoClient, seeder: IgnicoSeeder, ignico_server: RunningServer
) -> None:
    # given: one payout an hour old, one now
    state = ignico_server.state
    seeder.user("ada@example.com")
    old = seeder.transaction("ada@example.com")
    new = seeder.transaction("ada@example.com")
    with state.lock:
        state.transactions[int(old)].added_at -= 3600
    cutoff = client.get_transaction(new).added_at
    # when
    page = client.pending_payouts(added_since=cutoff)
    # then
    assert [tx.id for tx in page.items] == [new]


def test_token_is_cached_then_refetched_once_after_expiry(
    client: IgnicoClient,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    ignico_server: RunningServer,
) -> None:
    # given: a token in use (the seeder holds one too)
    seeder.payouts(1)
    client.pending_payouts()
    client.pending_payouts()
    before = token_requests(ignico_server)
    # when: the sandbox expires every token, then the client lists again
    ignico_sandbox.expire_tokens()
    page = client.pending_payouts()
    # then: one new token, and the call succeeded
    assert len(page.items) == 1
    assert token_requests(ignico_server) == before + 1


def test_token_expiry_by_clock_fetches_a_new_token_before_calling(
    ignico_sandbox: SandboxControl, seeder: IgnicoSeeder, ignico_server: RunningServer
) -> None:
    # given: a client whose clock runs past the 48 h token lifetime
    now = [1_000.0]
    client = IgnicoClient(
        f"{ignico_sandbox.url}/api/v1", CLIENT_ID, CLIENT_SECRET, clock=lambda: now[0]
    )
    client.check()
    before = token_requests(ignico_server)
    # when
    now[0] += 172_800
    client.check()
    # then
    assert token_requests(ignico_server) == before + 1
    client.close()


def test_wrong_secret_raises_auth_error_without_the_secret(
    ignico_sandbox: SandboxControl,
) -> None:
    # given
    client = IgnicoClient(f"{ignico_sandbox.url}/api/v1", CLIENT_ID, "wrong-secret-value-x")
    # when
    with pytest.raises(ProviderAuthError) as caught:
        client.pending_payouts()
    # then
    assert caught.value.reason == "invalid_client"
    assert "wrong-secret-value-x" not in repr(caught.value) + str(caught.value) + repr(client)
    client.close()


def test_realize_then_realize_again_is_a_conflict(
    client: IgnicoClient, seeder: IgnicoSeeder, ignico_sandbox: SandboxControl
) -> None:
    # given
    (tx,) = seeder.payouts(1)
    # when
    realized = client.realize(tx)
    # then
    assert realized.realized and not realized.cancelled
    with pytest.raises(ConflictError):
        client.realize(tx)
    assert ignico_sandbox.issued(f"realized:{tx}") == 1


def test_cancel_records_the_reason(client: IgnicoClient, seeder: IgnicoSeeder) -> None:
    # given
    (tx,) = seeder.payouts(1)
    # when
    cancelled = client.cancel(tx, "reward discarded: card out of stock")
    # then
    assert cancelled.cancelled
    assert seeder.get(tx)["cancellationReason"] == "reward discarded: card out of stock"


def test_unknown_transaction_is_not_found(client: IgnicoClient, seeder: IgnicoSeeder) -> None:
    # given / when / then
    with pytest.raises(NotFoundError):
        client.get_transaction("999999")


def test_server_error_on_listing_is_transient(
    client: IgnicoClient, seeder: IgnicoSeeder, ignico_sandbox: SandboxControl
) -> None:
    # given
    ignico_sandbox.set_faults({"kind": "status", "status": 503, "path": TRANSACTIONS})
    # when / then
    with pytest.raises(TransientProviderError):
        client.pending_payouts()
