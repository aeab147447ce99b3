"""IfeelgoodsClient against the running Ifeelgoods sandbox, including injected faults."""

from __future__ import annotations

import pytest

from sandboxes import SandboxControl
from tasks.providers import (
    ConflictError,
    IfeelgoodsClient,
    IfeelgoodsUser,
    NotFoundError,
    PermanentProviderError,
    PreconditionFailedError,
    ProviderAuthError,
    RateLimitedError,
    RedemptionState,
    TransientProviderError,
    UnknownOutcomeError,
    VersionConflictError,
)
from tests.ifeelgoods_staging import create_pending_redemption

PROMOTION_ID = 1
SKU = "AMZ-25USD-US"
REDEEM_ACTION = "/fulfillment/v2/redemptions/*/actions/redeem"
CREATE_AND_REDEEM = "/fulfillment/v2/promotions/*/rewards/*/redemptions/actions/redeem"


def test_create_and_redeem_returns_redeemed_redemption_with_codes(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given / when
    redemption = ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-1", user)
    # then
    assert redemption.state is RedemptionState.REDEEMED and redemption.is_redeemed
    assert redemption.version == 1 and redemption.reward_sku == SKU
    assert len(redemption.codes) == 1 and len(redemption.codes[0].reveal()) == 16
    assert ifeelgoods_sandbox.issued("ord-1") == 1


def test_create_and_redeem_replay_returns_same_redemption_and_issues_nothing_new(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    first = ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-r", user)
    # when
    again = ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-r", user)
    # then
    assert again == first
    assert ifeelgoods_sandbox.issued("ord-r") == 1


def test_create_and_redeem_for_other_user_raises_conflict_user_mismatch(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser
) -> None:
    # given
    ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-u", user)
    # when
    with pytest.raises(ConflictError) as caught:
        ifeelgoods_client.create_and_redeem(
            PROMOTION_ID, SKU, "ord-u", IfeelgoodsUser(email="eve@example.com")
        )
    # then
    assert caught.value.reason == "user_mismatch" and caught.value.status_code == 409


def test_a_pending_redemption_is_redeemed_by_ensure_redeemed_with_codes(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser
) -> None:
    # given
    pending = create_pending_redemption(ifeelgoods_client, PROMOTION_ID, "ord-p", user, SKU)
    # when
    redeemed = ifeelgoods_client.ensure_redeemed(pending.id, user, current=pending)
    # then
    assert pending.state is RedemptionState.PENDING and pending.codes == ()
    assert redeemed.state is RedemptionState.REDEEMED and redeemed.version == 2
    assert redeemed.codes


def test_find_by_order_id_returns_redemption_or_none(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser
) -> None:
    # given
    created = ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-f", user)
    # when
    found = ifeelgoods_client.find_by_order_id(PROMOTION_ID, "ord-f")
    missing = ifeelgoods_client.find_by_order_id(PROMOTION_ID, "ord-none")
    # then
    assert found == created
    assert missing is None


def test_get_unknown_redemption_raises_not_found(ifeelgoods_client: IfeelgoodsClient) -> None:
    # given / when / then
    with pytest.raises(NotFoundError):
        ifeelgoods_client.get_redemption("NOPE0-NOPE0")


def test_redeem_with_stale_version_raises_precondition_failed(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser
) -> None:
    # given
    pending = create_pending_redemption(ifeelgoods_client, PROMOTION_ID, "ord-v", user, SKU)
    # when / then
    with pytest.raises(PreconditionFailedError):
        ifeelgoods_client.redeem(pending.id, user, version=pending.version + 5)


def test_ensure_redeemed_rereads_after_412_race_and_succeeds(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    pending = create_pending_redemption(ifeelgoods_client, PROMOTION_ID, "ord-race", user, SKU)
    ifeelgoods_sandbox.set_faults(
        {"method": "POST", "path": REDEEM_ACTION, "kind": "precondition_race", "times": 2}
    )
    # when
    redeemed = ifeelgoods_client.ensure_redeemed(pending.id, user, current=pending)
    # then
    assert redeemed.state is RedemptionState.REDEEMED and redeemed.codes
    assert redeemed.version == 4  # two foreign bumps plus our redeem
    counters = ifeelgoods_sandbox.counters()
    assert counters["issued"] == {"ord-race": 1}
    assert counters["faults_injected"] == {"precondition_race": 2}


def test_ensure_redeemed_raises_version_conflict_when_every_attempt_races(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    pending = create_pending_redemption(ifeelgoods_client, PROMOTION_ID, "ord-ex", user, SKU)
    ifeelgoods_sandbox.set_faults(
        {"method": "POST", "path": REDEEM_ACTION, "kind": "precondition_race"}
    )
    # when
    with pytest.raises(VersionConflictError) as caught:
        ifeelgoods_client.ensure_redeemed(pending.id, user, current=pending, max_attempts=3)
    # then
    assert isinstance(caught.value.__cause__, PreconditionFailedError)
    assert isinstance(caught.value, PermanentProviderError)
    ifeelgoods_sandbox.clear_faults()
    assert ifeelgoods_client.get_redemption(pending.id).state is RedemptionState.PENDING
    assert ifeelgoods_sandbox.counters()["faults_injected"] == {"precondition_race": 3}


def test_ensure_redeemed_takes_codes_without_writing_when_already_redeemed(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    done = ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-done", user)
    requests_before = ifeelgoods_sandbox.counters()["requests"]
    # when
    result = ifeelgoods_client.ensure_redeemed(done.id, user)
    # then
    assert result == done
    assert ifeelgoods_sandbox.counters()["requests"] == requests_before + 1  # one GET only


def test_ensure_redeemed_on_canceled_redemption_is_permanent(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser
) -> None:
    # given
    pending = create_pending_redemption(ifeelgoods_client, PROMOTION_ID, "ord-cx", user, SKU)
    ifeelgoods_client.cancel(pending.id, version=pending.version)
    # when
    with pytest.raises(PermanentProviderError) as caught:
        ifeelgoods_client.ensure_redeemed(pending.id, user)
    # then
    assert caught.value.reason == "redemption_canceled"


def test_cancel_of_redeemed_redemption_is_refused(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser
) -> None:
    # given
    redeemed = ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-nc", user)
    # when
    with pytest.raises(PermanentProviderError) as caught:
        ifeelgoods_client.cancel(redeemed.id, version=redeemed.version)
    # then
    assert caught.value.reason == "operation_refused" and caught.value.status_code == 422


def test_latency_within_timeout_still_succeeds(
    make_ifeelgoods_client, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    client = make_ifeelgoods_client(timeout=1.0)
    ifeelgoods_sandbox.set_faults({"kind": "latency", "ms": 200, "times": 1})
    # when
    redemption = client.create_and_redeem(PROMOTION_ID, SKU, "ord-slow", user)
    # then
    assert redemption.is_redeemed


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_on_write_is_unknown_outcome_and_retry_with_same_order_id_issues_once(
    ifeelgoods_client: IfeelgoodsClient,
    user: IfeelgoodsUser,
    ifeelgoods_sandbox: SandboxControl,
    status: int,
) -> None:
    # given
    ifeelgoods_sandbox.set_faults(
        {
            "method": "POST",
            "path": CREATE_AND_REDEEM,
            "kind": "status",
            "status": status,
            "times": 1,
        }
    )
    # when
    with pytest.raises(UnknownOutcomeError) as caught:
        ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-5xx", user)
    retried = ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-5xx", user)
    # then
    assert caught.value.status_code == status
    assert retried.is_redeemed
    assert ifeelgoods_sandbox.issued("ord-5xx") == 1


def test_5xx_on_read_is_plain_transient(
    ifeelgoods_client: IfeelgoodsClient, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    ifeelgoods_sandbox.set_faults({"method": "GET", "kind": "status", "status": 503, "body": False})
    # when
    with pytest.raises(TransientProviderError) as caught:
        ifeelgoods_client.find_by_order_id(PROMOTION_ID, "ord-x")
    # then
    assert not isinstance(caught.value, UnknownOutcomeError)
    assert caught.value.reason == "http_503"


def test_429_raises_rate_limited_with_retry_after(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    ifeelgoods_sandbox.set_faults({"kind": "rate_limit", "retry_after": 2, "times": 1})
    # when
    with pytest.raises(RateLimitedError) as caught:
        ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-429", user)
    # then
    assert caught.value.retry_after == 2.0 and caught.value.status_code == 429
    assert isinstance(caught.value, TransientProviderError)
    assert ifeelgoods_sandbox.issued("ord-429") == 0


def test_commit_then_timeout_is_unknown_outcome_then_lookup_finds_it_and_retry_issues_nothing(
    make_ifeelgoods_client, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    client = make_ifeelgoods_client(timeout=0.3)
    ifeelgoods_sandbox.set_faults(
        {"path": CREATE_AND_REDEEM, "kind": "commit_then_timeout", "seconds": 1.0, "times": 1}
    )
    # when
    with pytest.raises(UnknownOutcomeError) as caught:
        client.create_and_redeem(PROMOTION_ID, SKU, "ord-ctt", user)
    found = client.find_by_order_id(PROMOTION_ID, "ord-ctt")
    retried = client.create_and_redeem(PROMOTION_ID, SKU, "ord-ctt", user)
    # then
    assert caught.value.reason == "timeout" and caught.value.status_code is None
    assert found is not None and found.is_redeemed
    assert retried.id == found.id and retried.codes == found.codes
    assert ifeelgoods_sandbox.issued("ord-ctt") == 1


def test_409_conflict_name_means_reload_and_maps_to_precondition_failed(
    ifeelgoods_client: IfeelgoodsClient, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    """providers.md 1.5: 409 conflict = 'already modified, please reload'."""
    # given
    pending = create_pending_redemption(ifeelgoods_client, PROMOTION_ID, "ord-409", user, SKU)
    ifeelgoods_sandbox.set_faults(
        {"path": REDEEM_ACTION, "kind": "permanent", "status": 409, "error": "conflict", "times": 1}
    )
    # when
    redeemed = ifeelgoods_client.ensure_redeemed(pending.id, user, current=pending)
    # then
    assert redeemed.is_redeemed


def test_wrong_secret_raises_auth_error(make_ifeelgoods_client) -> None:
    # given
    client = make_ifeelgoods_client(api_secret="not-the-secret")
    # when
    with pytest.raises(ProviderAuthError) as caught:
        client.check()
    # then
    assert caught.value.status_code == 401 and caught.value.reason == "unauthorized"


def test_unknown_sku_is_not_found_and_invalid_user_is_permanent(
    ifeelgoods_client: IfeelgoodsClient, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given
    bad_user = IfeelgoodsUser(email="not-an-email")
    # when
    with pytest.raises(NotFoundError):
        ifeelgoods_client.create_and_redeem(PROMOTION_ID, "NOPE-SKU", "ord-n", bad_user)
    with pytest.raises(PermanentProviderError) as caught:
        ifeelgoods_client.create_and_redeem(PROMOTION_ID, SKU, "ord-n", bad_user)
    # then
    assert caught.value.reason == "invalid_user" and caught.value.status_code == 422
    assert ifeelgoods_sandbox.counters()["issued"] == {}
