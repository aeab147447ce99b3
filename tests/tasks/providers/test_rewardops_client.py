"""RewardOpsClient against the running RewardOps sandbox, including injected faults."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate

import pytest

from sandboxes import SandboxControl
from sandboxes.server import RunningServer
from tasks.providers import (
    ConflictError,
    ItemStatus,
    Member,
    NotFoundError,
    PermanentProviderError,
    ProviderAuthError,
    RateLimitedError,
    RewardOpsClient,
    TransientProviderError,
    UnknownOutcomeError,
)
from tasks.providers.adapters import Recipient, RewardOpsAdapter
from tasks.routing import Route
from worker.stores.ledger import BeginDecision

PROGRAM_ID = 12
GIFT = "tok-gift-25"
ORDERS = "/api/v4/programs/*/orders"


def minted_tokens(server: RunningServer) -> int:
    return len(server.state.tokens)


def test_create_order_delivered_immediately_carries_masked_codes(
    rewardops_client: RewardOpsClient, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given / when
    order = rewardops_client.create_order(PROGRAM_ID, "po-1", member, GIFT)
    # then
    assert order.program_order_id == "po-1" and order.status == "PENDING"
    assert order.is_delivered and not order.is_terminal_failure
    assert [item.status for item in order.items] == [ItemStatus.DELIVERED]
    assert len(order.codes) == 1 and len(order.codes[0].reveal()) == 12
    assert rewardops_sandbox.issued("po-1") == 1


def test_create_order_twice_adopts_existing_order_after_409(
    rewardops_client: RewardOpsClient, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given
    first = rewardops_client.create_order(PROGRAM_ID, "po-dup", member, GIFT)
    # when
    second = rewardops_client.create_order(PROGRAM_ID, "po-dup", member, GIFT)
    # then
    assert second.id == first.id and second.codes == first.codes
    assert rewardops_sandbox.issued("po-dup") == 1


def test_409_without_a_findable_order_is_a_conflict_error(
    rewardops_client: RewardOpsClient, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given
    rewardops_sandbox.set_faults(
        {"method": "POST", "path": ORDERS, "kind": "permanent", "status": 409, "times": 1}
    )
    # when / then
    with pytest.raises(ConflictError):
        rewardops_client.create_order(PROGRAM_ID, "po-ghost", member, GIFT)


def test_get_order_returns_none_when_absent(rewardops_client: RewardOpsClient) -> None:
    # given / when / then
    assert rewardops_client.get_order(PROGRAM_ID, "po-none") is None


def test_order_progresses_to_delivered_on_later_reads(
    rewardops_client: RewardOpsClient, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given
    rewardops_sandbox.configure(delivery_delay=0.2)
    created = rewardops_client.create_order(PROGRAM_ID, "po-slow", member, GIFT)
    # when
    time.sleep(0.25)
    later = rewardops_client.get_order(PROGRAM_ID, "po-slow")
    # then
    assert created.items[0].status is ItemStatus.PENDING and created.codes == ()
    assert not created.is_delivered and not created.is_terminal_failure
    assert later is not None and later.is_delivered and later.codes


def test_rejected_item_is_terminal_failure(
    rewardops_client: RewardOpsClient, member: Member
) -> None:
    # given / when
    order = rewardops_client.create_order(PROGRAM_ID, "po-rej", member, "tok-reject")
    # then
    assert order.is_terminal_failure and not order.is_delivered
    assert order.status == "STOPPED"


def test_link_item_is_delivered_with_masked_link(
    rewardops_client: RewardOpsClient, member: Member
) -> None:
    # given / when
    order = rewardops_client.create_order(PROGRAM_ID, "po-link", member, "tok-link-15", quantity=2)
    # then
    assert order.is_delivered and len(order.items) == 2
    assert all(link.reveal().startswith("https://") for link in order.links)
    assert "https" not in repr(order)


def test_token_is_fetched_once_and_reused(
    rewardops_client: RewardOpsClient, member: Member, rewardops_server: RunningServer
) -> None:
    # given
    rewardops_client.create_order(PROGRAM_ID, "po-t1", member, GIFT)
    # when
    rewardops_client.get_order(PROGRAM_ID, "po-t1")
    rewardops_client.list_orders(PROGRAM_ID, member.id)
    # then
    assert minted_tokens(rewardops_server) == 1


def test_expired_token_is_refreshed_once_and_the_call_succeeds(
    rewardops_client: RewardOpsClient,
    member: Member,
    rewardops_sandbox: SandboxControl,
    rewardops_server: RunningServer,
) -> None:
    # given
    rewardops_client.check()
    rewardops_sandbox.expire_tokens()
    # when
    order = rewardops_client.create_order(PROGRAM_ID, "po-exp", member, GIFT)
    # then
    assert order.is_delivered
    assert minted_tokens(rewardops_server) == 2
    assert rewardops_sandbox.issued("po-exp") == 1


def test_token_expired_fault_triggers_single_refresh(
    rewardops_client: RewardOpsClient,
    member: Member,
    rewardops_sandbox: SandboxControl,
    rewardops_server: RunningServer,
) -> None:
    # given
    rewardops_client.check()
    rewardops_sandbox.set_faults({"path": ORDERS + "*", "kind": "token_expired", "times": 1})
    # when
    order = rewardops_client.create_order(PROGRAM_ID, "po-tf", member, GIFT)
    # then
    assert order.is_delivered
    assert minted_tokens(rewardops_server) == 2


def test_persistent_401_raises_auth_error_after_exactly_one_refresh(
    rewardops_client: RewardOpsClient,
    member: Member,
    rewardops_sandbox: SandboxControl,
    rewardops_server: RunningServer,
) -> None:
    # given
    rewardops_sandbox.set_faults({"path": ORDERS + "*", "kind": "token_expired"})
    # when
    with pytest.raises(ProviderAuthError) as caught:
        rewardops_client.get_order(PROGRAM_ID, "po-x")
    # then
    assert caught.value.status_code == 401
    assert minted_tokens(rewardops_server) == 2
    assert rewardops_sandbox.counters()["faults_injected"] == {"token_expired": 2}


def test_wrong_client_secret_raises_auth_error(make_rewardops_client) -> None:
    # given
    client = make_rewardops_client(client_secret="not-the-secret")
    # when
    with pytest.raises(ProviderAuthError) as caught:
        client.check()
    # then
    assert caught.value.reason == "invalid_client"


def test_token_is_refreshed_before_it_expires_by_the_local_clock(
    rewardops_sandbox: SandboxControl, rewardops_server: RunningServer
) -> None:
    # given
    now = [time.time()]
    client = RewardOpsClient(
        f"{rewardops_sandbox.url}/api/v4",
        "test-ro-client-83b2",
        "test-ro-secret-e6f04a9d17",
        clock=lambda: now[0],
        refresh_margin=60,
    )
    client.check()
    # when
    now[0] += 7200 - 61
    client.check()
    now[0] += 2
    client.check()
    client.close()
    # then
    assert minted_tokens(rewardops_server) == 2


def test_concurrent_calls_share_one_token_request(
    rewardops_client: RewardOpsClient, rewardops_server: RunningServer
) -> None:
    # given
    errors: list[BaseException] = []

    def call() -> None:
        try:
            rewardops_client.get_order(PROGRAM_ID, "po-none")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then
    assert errors == []
    assert minted_tokens(rewardops_server) == 1


def test_commit_then_timeout_is_unknown_outcome_then_lookup_finds_order_and_retry_creates_nothing(
    make_rewardops_client, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given
    client = make_rewardops_client(timeout=0.3)
    client.check()
    rewardops_sandbox.set_faults(
        {
            "method": "POST",
            "path": ORDERS,
            "kind": "commit_then_timeout",
            "seconds": 1.0,
            "times": 1,
        }
    )
    # when
    with pytest.raises(UnknownOutcomeError) as caught:
        client.create_order(PROGRAM_ID, "po-ctt", member, GIFT)
    found = client.get_order(PROGRAM_ID, "po-ctt")
    retried = client.create_order(PROGRAM_ID, "po-ctt", member, GIFT)
    # then
    assert caught.value.reason == "timeout"
    assert found is not None and retried.id == found.id
    assert rewardops_sandbox.issued("po-ctt") == 1


@pytest.mark.parametrize("body", [True, False])
def test_5xx_on_create_is_unknown_outcome_and_retry_creates_once(
    rewardops_client: RewardOpsClient, member: Member, rewardops_sandbox: SandboxControl, body: bool
) -> None:
    # given
    rewardops_sandbox.set_faults(
        {
            "method": "POST",
            "path": ORDERS,
            "kind": "status",
            "status": 502,
            "body": body,
            "times": 1,
        }
    )
    # when
    with pytest.raises(UnknownOutcomeError) as caught:
        rewardops_client.create_order(PROGRAM_ID, "po-502", member, GIFT)
    retried = rewardops_client.create_order(PROGRAM_ID, "po-502", member, GIFT)
    # then
    assert caught.value.status_code == 502
    assert retried.is_delivered
    assert rewardops_sandbox.issued("po-502") == 1


def test_5xx_on_lookup_is_plain_transient(
    rewardops_client: RewardOpsClient, rewardops_sandbox: SandboxControl
) -> None:
    # given
    rewardops_sandbox.set_faults({"method": "GET", "kind": "status", "status": 500, "times": 1})
    # when
    with pytest.raises(TransientProviderError) as caught:
        rewardops_client.get_order(PROGRAM_ID, "po-1")
    # then
    assert not isinstance(caught.value, UnknownOutcomeError)


def test_429_with_http_date_retry_after_is_rate_limited(
    rewardops_client: RewardOpsClient, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given
    when = formatdate(time.time() + 30, usegmt=True)
    rewardops_sandbox.set_faults(
        {"path": ORDERS, "kind": "rate_limit", "retry_after": when, "times": 1}
    )
    # when
    with pytest.raises(RateLimitedError) as caught:
        rewardops_client.create_order(PROGRAM_ID, "po-429", member, GIFT)
    # then
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 30
    assert rewardops_sandbox.issued("po-429") == 0


def test_latency_within_timeout_still_succeeds(
    make_rewardops_client, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given
    client = make_rewardops_client(timeout=1.0)
    rewardops_sandbox.set_faults({"kind": "latency", "ms": 200})
    # when
    order = client.create_order(PROGRAM_ID, "po-lat", member, GIFT)
    # then
    assert order.is_delivered


def test_unknown_item_token_is_permanent_and_unknown_program_is_not_found(
    rewardops_client: RewardOpsClient, member: Member, rewardops_sandbox: SandboxControl
) -> None:
    # given / when
    with pytest.raises(PermanentProviderError) as bad_token:
        rewardops_client.create_order(PROGRAM_ID, "po-bad", member, "tok-nope")
    with pytest.raises(NotFoundError):
        rewardops_client.create_order(999, "po-bad", member, GIFT)
    # then
    assert bad_token.value.status_code == 400 and bad_token.value.reason == "parameter_error"
    assert bad_token.value.detail and "item_order_token" in bad_token.value.detail
    assert rewardops_sandbox.counters()["issued"] == {}


def test_list_orders_returns_member_orders_newest_first(
    rewardops_client: RewardOpsClient, member: Member
) -> None:
    # given
    for key in ("po-a", "po-b"):
        rewardops_client.create_order(PROGRAM_ID, key, member, GIFT)
    # when
    orders = rewardops_client.list_orders(PROGRAM_ID, member.id)
    # then
    assert {o.program_order_id for o in orders} == {"po-a", "po-b"}


def _member_paid(server: RunningServer, program_order_id: str) -> list[dict[str, str]]:
    """What the sandbox recorded as each ordered unit's ``member_paid`` (from our body)."""
    order_id = server.state.by_program_order[(PROGRAM_ID, program_order_id)]
    return [item.member_paid for item in server.state.orders[order_id].items]


def test_create_order_sends_the_required_member_spend_zero_by_default(
    rewardops_client: RewardOpsClient,
    member: Member,
    rewardops_sandbox: SandboxControl,
    rewardops_server: RunningServer,
) -> None:
    """providers.md 2.6: items[].member_spend is required; the sandbox refuses an order
    without it (400), so this order passing is the client sending it."""
    # given / when
    order = rewardops_client.create_order(PROGRAM_ID, "po-spend-0", member, GIFT, quantity=2)
    # then
    assert order.is_delivered
    assert _member_paid(rewardops_server, "po-spend-0") == [{"USD": "0"}, {"USD": "0"}]


def test_rule_member_spend_reaches_the_order(
    rewardops_client: RewardOpsClient,
    rewardops_sandbox: SandboxControl,
    rewardops_server: RunningServer,
) -> None:
    """The routing rule's member_spend (programme currency and amount) is what we send."""
    # given a route whose rule names the programme's currency and the member's spend
    route = Route(
        "rewardops",
        "voucher",
        program_id=PROGRAM_ID,
        item_order_token=GIFT,
        spend_currency="XRO-PTS",
        spend_amount="1000",
    )
    adapter = RewardOpsAdapter(rewardops_client)
    # when
    result = adapter.fulfil(
        "po-spend-rule", route, Recipient(email="ada@example.com"), BeginDecision.SUBMIT
    )
    # then
    assert result.codes
    assert _member_paid(rewardops_server, "po-spend-rule") == [{"XRO-PTS": "1000"}]
