"""``rewardrelay check``: one ok/FAIL line per item, exit 1 if any fails."""

from __future__ import annotations

import os

import pytest

from rewardrelay.cli import main
from rewardrelay.embedded import EmbeddedRedis
from sandboxes.server import create_sandbox_app, serve_in_thread
from worker.config import Settings


@pytest.fixture
def local_services(tmp_path, cli_env, monkeypatch):
    ifeelgoods = serve_in_thread(
        create_sandbox_app("ifeelgoods", api_key="k-1", api_secret="s-1"), log_requests=False
    )
    rewardops = serve_in_thread(
        create_sandbox_app("rewardops", client_id="c-1", client_secret="cs-1"),
        log_requests=False,
    )
    with EmbeddedRedis(tmp_path) as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.setenv("IFEELGOODS_BASE_URL", f"{ifeelgoods.url}/fulfillment/v2")
        monkeypatch.setenv("IFEELGOODS_API_KEY", "k-1")
        monkeypatch.setenv("IFEELGOODS_API_SECRET", "s-1")
        monkeypatch.setenv("REWARDOPS_BASE_URL", f"{rewardops.url}/api/v4")
        monkeypatch.setenv("REWARDOPS_CLIENT_ID", "c-1")
        monkeypatch.setenv("REWARDOPS_CLIENT_SECRET", "cs-1")
        yield
    ifeelgoods.stop()
    rewardops.stop()


def _items(out: str) -> dict[str, str]:
    lines = [line for line in out.splitlines() if line[:4] in ("ok  ", "FAIL")]
    return {line[5:].split()[0].rstrip(":"): line[:4].strip() for line in lines}


def test_every_item_is_ok_against_reachable_services(local_services, capsys):
    # when
    code = main(["check"])

    # then
    out = capsys.readouterr().out
    assert code == 0, out
    assert _items(out) == {
        "settings": "ok",
        "rules": "ok",
        "redis": "ok",
        "broker": "ok",
        "ifeelgoods": "ok",
        "rewardops": "ok",
    }
    assert "cs-1" not in out and "s-1\n" not in out


def test_rejected_credentials_and_unreachable_providers_fail(local_services, monkeypatch, capsys):
    # given
    monkeypatch.setenv("IFEELGOODS_API_SECRET", "wrong")
    monkeypatch.setenv("REWARDOPS_BASE_URL", "http://127.0.0.1:9/api/v4")

    # when
    code = main(["check"])

    # then
    out = capsys.readouterr().out
    assert code == 1
    assert _items(out)["ifeelgoods"] == "FAIL"
    assert _items(out)["rewardops"] == "FAIL"
    assert _items(out)["redis"] == "ok"
    assert "credentials rejected (HTTP 401)" in out


def test_missing_redis_url_fails_the_settings_item_and_says_how_to_start_the_stack(cli_env, capsys):
    # given no REDIS_URL and no `rewardrelay run` on the data directory (the stack is down)

    # when
    code = main(["check"])

    # then the failure, and one line naming the fix, worded as the other stack-down lines
    out = capsys.readouterr().out.strip()
    assert code == 1
    assert out.splitlines() == [
        "FAIL settings: invalid setting REDIS_URL: is required but not set",
        f"       no local stack is running ({cli_env}) — start `rewardrelay run`, or set REDIS_URL",
    ]


def test_a_malformed_redis_url_gets_no_stack_hint(cli_env, monkeypatch, capsys):
    # given a REDIS_URL the operator set, wrongly
    monkeypatch.setenv("REDIS_URL", "http://not-redis")

    # when
    code = main(["check"])

    # then only the setting is named: starting a stack would not change it
    out = capsys.readouterr().out.strip()
    assert code == 1
    assert out.startswith("FAIL settings: invalid setting REDIS_URL")
    assert "rewardrelay run" not in out


_BROKEN = {
    # item: how to break it (variable → value; "{rules}" is a bad rules file)
    "rules": {"RULES_FILE": "{rules}"},
    "redis": {"REDIS_URL": "redis://127.0.0.1:9/0", "CELERY_BROKER_URL": "{redis}"},
    "broker": {"CELERY_BROKER_URL": "redis://127.0.0.1:9/0"},
    "ifeelgoods": {"IFEELGOODS_BASE_URL": "http://127.0.0.1:9/fulfillment/v2"},
    "rewardops": {"REWARDOPS_CLIENT_SECRET": "not-the-secret"},
}


@pytest.mark.parametrize("broken", sorted(_BROKEN))
def test_each_broken_dependency_fails_alone_and_is_named(
    local_services, monkeypatch, tmp_path, capsys, broken
):
    # given every dependency healthy but one
    rules = tmp_path / "bad-rules.toml"
    rules.write_text('[[rule]]\nname = "no-provider"\nsource = "coniq"\n')
    healthy_redis = os.environ["REDIS_URL"]
    for name, value in _BROKEN[broken].items():
        monkeypatch.setenv(name, value.format(rules=rules, redis=healthy_redis))

    # when
    code = main(["check"])

    # then the exit is non-zero and only the broken item fails, by name
    out = capsys.readouterr().out
    assert code == 1, out
    items = _items(out)
    assert items.pop(broken) == "FAIL", out
    assert set(items.values()) == {"ok"}, out
    assert f"FAIL {broken}" in out


def test_a_base_url_that_is_not_the_api_fails(local_services, monkeypatch, capsys):
    # given the Ifeelgoods URL points at a server, but not at its API
    base = os.environ["IFEELGOODS_BASE_URL"].removesuffix("/fulfillment/v2")
    monkeypatch.setenv("IFEELGOODS_BASE_URL", f"{base}/not-the-api")

    # when
    code = main(["check"])

    # then
    out = capsys.readouterr().out
    assert code == 1
    assert _items(out)["ifeelgoods"] == "FAIL"
    assert "HTTP 404" in out


def test_configured_sources_are_checked_and_an_unconnected_platform_fails(
    local_services, monkeypatch, capsys
):
    # given Ignico and Coniq sandboxes, and an orders platform never connected
    ignico = serve_in_thread(
        create_sandbox_app("ignico", client_id="ig-1", client_secret="igs-1"), log_requests=False
    )
    orders = serve_in_thread(
        create_sandbox_app("orders-platform", client_id="op-1", client_secret="ops-1"),
        log_requests=False,
    )
    coniq = serve_in_thread(create_sandbox_app("coniq", api_key="ck-1"), log_requests=False)
    env = {
        "IGNICO_BASE_URL": f"{ignico.url}/api/v1",
        "IGNICO_CLIENT_ID": "ig-1",
        "IGNICO_CLIENT_SECRET": "igs-1",
        "ORDERS_BASE_URL": orders.url,
        "ORDERS_CLIENT_ID": "op-1",
        "ORDERS_CLIENT_SECRET": "ops-1",
        "CONIQ_BASE_URL": coniq.url,
        "CONIQ_API_KEY": "ck-1",
        "CONIQ_RECORD_OFFER_ID": "9001",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    # when
    code = main(["check"])

    # then
    out = capsys.readouterr().out
    items = _items(out)
    assert code == 1
    assert items["rules"] == "ok" and items["ignico"] == "ok" and items["coniq"] == "ok"
    assert items["orders-platform"] == "FAIL"
    assert "rewardrelay connect orders-platform" in out
    assert "igs-1" not in out and "ops-1" not in out and "ck-1" not in out
    for server in (ignico, orders, coniq):
        server.stop()


class _ReadRecorder(dict[str, str]):
    """An environment that remembers which variables were read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)


def test_settings_are_listed_under_the_variables_that_set_them(local_services, capsys):
    # given the variable names Settings.from_env really reads
    environ = _ReadRecorder()
    Settings.from_env(environ)

    # when
    main(["check"])

    # then every listed setting is one of them (CELERY_BROKER_URL, not BROKER_URL)
    out = capsys.readouterr().out
    listed = {
        line.strip().split("=", 1)[0] for line in out.splitlines() if line.startswith("       ")
    }
    assert listed - environ.read == set()
    assert {"CELERY_BROKER_URL", "RR_KEY_PREFIX", "REDIS_URL"} <= listed
