"""``rewardrelay run`` fills in what is unset and refuses to start on a taken port or a
data directory another run holds. (The full run is covered end to end elsewhere.)"""

from __future__ import annotations

import socket

import pytest

from rewardrelay.datadir import DataDir
from rewardrelay.stack import Stack, StackError


def _environ(tmp_path, **extra: str) -> dict[str, str]:
    return {"RR_DATA_DIR": str(tmp_path / "data"), **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unset_secrets_and_providers_come_from_the_data_dir(tmp_path):
    # given
    stack = Stack(port=_free_port(), flower=False, environ=_environ(tmp_path))

    # when
    settings = stack.prepare()
    stack.stop()

    # then
    local = DataDir(tmp_path / "data").secrets()
    assert settings.coniq_webhook_secrets == (local["CONIQ_WEBHOOK_SECRETS"],)
    assert settings.admin_token == local["ADMIN_TOKEN"]
    assert settings.ifeelgoods_api_key == local["IFEELGOODS_API_KEY"]
    assert [s.name for s in stack.sandboxes] == [
        "ifeelgoods",
        "rewardops",
        "ignico",
        "orders-platform",
        "coniq",
    ]
    assert settings.ignico_configured and settings.orders_configured
    assert settings.coniq_outbound_configured and settings.receiver_url == stack.receiver_url
    # and Sentry events of a local run are not production's
    assert settings.sentry_environment == "development"


def test_set_provider_credentials_mean_no_sandbox(tmp_path):
    # given
    environ = _environ(tmp_path, IFEELGOODS_API_KEY="real-key", ADMIN_TOKEN="t" * 20)
    stack = Stack(port=_free_port(), flower=False, environ=environ)

    # when
    settings = stack.prepare()
    stack.stop()

    # then
    assert settings.ifeelgoods_api_key == "real-key"
    assert settings.admin_token == "t" * 20
    assert [s.name for s in stack.sandboxes] == ["rewardops", "ignico", "orders-platform", "coniq"]


def test_a_set_sentry_environment_is_kept_and_flower_gets_an_open_api_without_our_metrics(
    tmp_path,
):
    # given
    environ = _environ(tmp_path, SENTRY_ENVIRONMENT="demo", PROMETHEUS_MULTIPROC_DIR="")
    stack = Stack(port=_free_port(), flower=True, flower_port=_free_port(), environ=environ)

    # when
    settings = stack.prepare()
    flower_env = stack._flower_env()
    stack.stop()

    # then
    assert settings.sentry_environment == "demo"
    # Flower, on loopback, answers its API without credentials (else 401) ...
    assert flower_env["FLOWER_UNAUTHENTICATED_API"] == "true"
    # ... and writes no flower_* series into the receiver's metrics directory
    assert stack.env["PROMETHEUS_MULTIPROC_DIR"]
    assert "PROMETHEUS_MULTIPROC_DIR" not in flower_env


def test_flower_api_stays_closed_when_flower_auth_is_configured(tmp_path):
    environ = _environ(tmp_path, FLOWER_BASIC_AUTH="ops:secret-password")
    stack = Stack(port=_free_port(), flower=True, flower_port=_free_port(), environ=environ)
    stack.prepare()
    flower_env = stack._flower_env()
    stack.stop()
    assert "FLOWER_UNAUTHENTICATED_API" not in flower_env


def test_refuses_a_receiver_port_in_use(tmp_path):
    # given
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack = Stack(port=taken.getsockname()[1], flower=False, environ=_environ(tmp_path))

        # when / then
        with pytest.raises(StackError, match="already in use"):
            stack.prepare()
        stack.stop()


def test_refuses_a_data_dir_another_run_holds(tmp_path):
    # given
    first = Stack(port=_free_port(), flower=False, environ=_environ(tmp_path))
    first.prepare()
    second = Stack(port=_free_port(), flower=False, environ=_environ(tmp_path))

    # when / then
    try:
        with pytest.raises(StackError, match="another `rewardrelay run`"):
            second.prepare()
    finally:
        second.stop()
        first.stop()


def test_client_commands_see_the_sentry_environment_run_gives_its_children(tmp_path):
    # given a prepared run that recorded its stack (check reads settings through this)
    stack = Stack(port=_free_port(), flower=False, environ=_environ(tmp_path))
    stack.prepare()
    stack._record()

    # when a client command completes its environment from the data directory
    client_env = DataDir(tmp_path / "data").client_environ({})
    stack.stop()

    # then it sees "development", as the web, worker and relay do, not the default
    assert client_env["SENTRY_ENVIRONMENT"] == "development"
