"""ProviderClient transport handling with httpx.MockTransport (failures a sandbox cannot fake)."""

from __future__ import annotations

import httpx
import pytest

from tasks.providers import (
    IfeelgoodsClient,
    IfeelgoodsUser,
    RewardOpsClient,
    TransientProviderError,
    UnknownOutcomeError,
)

USER = IfeelgoodsUser(email="ada@example.com")


def client_raising(exc: Exception, seen: list[httpx.Request] | None = None) -> IfeelgoodsClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        raise exc

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return IfeelgoodsClient("https://ifg.test/fulfillment/v2", "key", "secret-value", http=http)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("t"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("eof"),
        httpx.WriteError("w"),
    ],
)
def test_failure_after_sending_a_write_is_unknown_outcome(exc: Exception) -> None:
    # given
    client = client_raising(exc)
    # when
    with pytest.raises(UnknownOutcomeError) as caught:
        client.create_and_redeem(1, "SKU", "ord-1", USER)
    # then
    assert caught.value.__cause__ is exc


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("t"), httpx.PoolTimeout("p")]
)
def test_failure_before_sending_is_plain_transient_even_for_writes(exc: Exception) -> None:
    # given
    client = client_raising(exc)
    # when
    with pytest.raises(TransientProviderError) as caught:
        client.create_and_redeem(1, "SKU", "ord-1", USER)
    # then
    assert not isinstance(caught.value, UnknownOutcomeError)


def test_read_failure_on_a_lookup_is_plain_transient() -> None:
    # given
    client = client_raising(httpx.ReadTimeout("t"))
    # when
    with pytest.raises(TransientProviderError) as caught:
        client.get_redemption("ABCDE-FGHIJ")
    # then
    assert not isinstance(caught.value, UnknownOutcomeError) and caught.value.reason == "timeout"


def test_unreadable_success_body_on_a_write_is_unknown_outcome() -> None:
    # given
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(201, text="<html>")))
    client = IfeelgoodsClient("https://ifg.test/fulfillment/v2", "key", "secret", http=http)
    # when
    with pytest.raises(UnknownOutcomeError) as caught:
        client.create_and_redeem(1, "SKU", "ord-1", USER)
    # then
    assert caught.value.reason == "invalid_response" and caught.value.status_code == 201


def test_path_segments_are_url_quoted() -> None:
    # given
    seen: list[httpx.Request] = []
    client = client_raising(httpx.ConnectError("x"), seen)
    # when
    with pytest.raises(TransientProviderError):
        client.get_redemption("../accounts/me?x=1")
    # then
    assert seen[0].url.raw_path == b"/fulfillment/v2/redemptions/..%2Faccounts%2Fme%3Fx%3D1"


def test_secrets_travel_in_headers_only_and_if_match_is_quoted() -> None:
    # given
    seen: list[httpx.Request] = []
    client = client_raising(httpx.ConnectError("x"), seen)
    # when
    with pytest.raises(TransientProviderError):
        client.redeem("ABCDE-FGHIJ", USER, version=4)
    # then
    request = seen[0]
    assert request.headers["Api-Secret"] == "secret-value"
    assert "secret-value" not in str(request.url)
    assert request.headers["If-Match"] == '"4"'


def test_client_reprs_hide_secrets() -> None:
    # given
    ifg = IfeelgoodsClient("https://ifg.test", "key-123456", "ifg-secret-xyz")
    ro = RewardOpsClient("https://ro.test", "client-123456", "ro-secret-xyz")
    # when
    text = repr(ifg) + repr(ro) + repr(vars(ifg)) + repr(vars(ro))
    ifg.close()
    ro.close()
    # then
    assert "ifg-secret-xyz" not in text and "ro-secret-xyz" not in text


@pytest.mark.parametrize("secret", ["", None])
def test_missing_credentials_are_rejected_at_construction(secret) -> None:
    # given / when / then
    with pytest.raises(ValueError):
        IfeelgoodsClient("https://ifg.test", "key", secret)
