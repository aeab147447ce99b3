"""Serving helpers: threaded servers on ephemeral ports and credential defaults."""

from __future__ import annotations

import base64

import httpx
import pytest

from sandboxes import create_sandbox_app, serve_in_thread


def test_serve_in_thread_binds_an_ephemeral_port_and_stops_cleanly() -> None:
    # given
    with serve_in_thread(create_sandbox_app("ifeelgoods"), log_requests=False) as server:
        # when
        response = httpx.get(f"{server.url}/_sandbox/counters")
        # then
        assert server.port > 0 and server.url.startswith("http://127.0.0.1:")
        assert response.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/_sandbox/counters", timeout=1)


def test_sandbox_credentials_default_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    monkeypatch.setenv("REWARDOPS_CLIENT_ID", "env-client")
    monkeypatch.setenv("REWARDOPS_CLIENT_SECRET", "env-secret")
    basic = base64.b64encode(b"env-client:env-secret").decode()
    with serve_in_thread(create_sandbox_app("rewardops"), log_requests=False) as server:
        # when
        response = httpx.post(
            f"{server.url}/api/v4/auth/token",
            headers={"Authorization": f"Basic {basic}"},
            data={"grant_type": "client_credentials"},
        )
    # then
    assert response.status_code == 200


def test_sandbox_credentials_fall_back_to_sandbox_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # given
    monkeypatch.delenv("IFEELGOODS_API_KEY", raising=False)
    monkeypatch.delenv("IFEELGOODS_API_SECRET", raising=False)
    with serve_in_thread(create_sandbox_app("ifeelgoods"), log_requests=False) as server:
        # when
        response = httpx.get(
            f"{server.url}/fulfillment/v2/accounts/me",
            headers={"Api-Key": "sandbox-key", "Api-Secret": "sandbox-secret"},
        )
    # then
    assert response.status_code == 200


@pytest.mark.parametrize(("name", "creds"), [("tango", {}), ("ifeelgoods", {"client_id": "x"})])
def test_unknown_sandbox_or_option_is_a_value_error(name: str, creds: dict[str, str]) -> None:
    # given / when / then
    with pytest.raises(ValueError, match="unknown"):
        create_sandbox_app(name, **creds)
