"""``send --fault`` arms the fault on the sandbox the event is routed to, then sends.

The provider sandboxes run as real HTTP servers; the receiver is the stub server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewardrelay.cli import main
from sandboxes.server import RunningServer, create_sandbox_app, serve_in_thread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def sandboxes(cli_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, RunningServer]]:
    servers = {
        "ifeelgoods": serve_in_thread(create_sandbox_app("ifeelgoods"), log_requests=False),
        "rewardops": serve_in_thread(create_sandbox_app("rewardops"), log_requests=False),
    }
    monkeypatch.setenv("IFEELGOODS_BASE_URL", f"{servers['ifeelgoods'].url}/fulfillment/v2")
    monkeypatch.setenv("REWARDOPS_BASE_URL", f"{servers['rewardops'].url}/api/v4")
    yield servers
    for server in servers.values():
        server.stop()


def _rules(server: RunningServer) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = httpx.get(f"{server.url}/_sandbox/faults").json()["rules"]
    return rules


def test_arms_the_routed_sandbox_only_then_sends(sandboxes, stub_server, capsys):
    # given an event that the example rules route to RewardOps program 12
    stub_server.handler = lambda _r: (202, {"status": "accepted"})
    example = EXAMPLES / "internal-reward-granted-rewardops.json"

    # when
    code = main(["send", "--source", "internal", "--file", str(example),
                 "--fault", "permanent:422", "--url", stub_server.url])  # fmt: skip

    # then RewardOps will refuse the next order for that program, once; Ifeelgoods is untouched
    assert code == 0
    assert len(stub_server.requests) == 1
    [rule] = _rules(sandboxes["rewardops"])
    assert (rule["kind"], rule["status"], rule["times"]) == ("permanent", 422, 1)
    assert (rule["method"], rule["path"]) == ("POST", "/api/v4/programs/12/orders")
    assert _rules(sandboxes["ifeelgoods"]) == []
    assert "armed permanent:422 on the rewardops sandbox" in capsys.readouterr().err


def test_the_armed_fault_hits_the_order_call_of_the_routed_product(sandboxes, stub_server):
    # given a Coniq reward for offer 1001 (Ifeelgoods promotion 1) sent with a 503 fault
    stub_server.handler = lambda _r: (202, {"status": "accepted"})
    main(["send", "--file", str(EXAMPLES / "coniq-reward-issued.json"), "--fault", "status:503",
          "--url", stub_server.url])  # fmt: skip
    ifeelgoods = sandboxes["ifeelgoods"].url
    path = "/fulfillment/v2/promotions/1/rewards/APP-ITU-10USD-US/redemptions/actions/redeem"
    headers = {"Api-Key": "sandbox-key", "Api-Secret": "sandbox-secret"}
    order = {"data": {"order_id": "evt_x:0:0", "user": {"email": "ada@example.com"}}}

    # when the worker would place that order, twice
    first = httpx.post(ifeelgoods + path, json=order, headers=headers)
    second = httpx.post(ifeelgoods + path, json=order, headers=headers)

    # then the first meets the fault and the second does not
    assert first.status_code == 503
    assert second.status_code != 503


def test_one_rule_per_route_with_one_hit_per_unit(sandboxes, stub_server, tmp_path):
    # given three units: two GIFT10 (Ifeelgoods) and one VOUCHER25 (RewardOps)
    stub_server.handler = lambda _r: (202, {"status": "accepted"})
    event = json.loads((EXAMPLES / "internal-reward-granted.json").read_text())
    event["data"]["rewards"] = [
        {"reward_code": "GIFT10", "quantity": 2},
        {"reward_code": "VOUCHER25", "quantity": 1},
    ]
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))

    # when
    code = main(["send", "--source", "internal", "--file", str(path), "--fault", "permanent",
                 "--url", stub_server.url])  # fmt: skip

    # then
    assert code == 0
    assert [r["times"] for r in _rules(sandboxes["ifeelgoods"])] == [2]
    assert [r["times"] for r in _rules(sandboxes["rewardops"])] == [1]


@pytest.mark.parametrize(
    ("example", "fault", "expected"),
    [
        ("internal-reward-granted-unroutable.json", "permanent:422", "no unit of event"),
        ("internal-reward-granted.json", "permanent:200", "--fault 'permanent:200'"),
        ("internal-reward-granted.json", "explode", "--fault 'explode'"),
    ],
)
def test_refuses_without_sending_when_no_fault_can_be_armed(
    sandboxes, stub_server, capsys, example, fault, expected
):
    # when
    code = main(["send", "--source", "internal", "--file", str(EXAMPLES / example),
                 "--fault", fault, "--url", stub_server.url])  # fmt: skip

    # then
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert stub_server.requests == []
    assert _rules(sandboxes["ifeelgoods"]) == []


def test_a_provider_that_is_not_a_sandbox_is_never_asked(
    sandboxes, stub_server, monkeypatch, capsys
):
    # given Ifeelgoods pointed at a server without the sandbox control API
    monkeypatch.setenv("IFEELGOODS_BASE_URL", f"{stub_server.url}/fulfillment/v2")
    stub_server.handler = lambda _r: (404, None)

    # when
    code = main(["send", "--fault", "permanent:422", "--url", stub_server.url])

    # then only a GET of the control API was made: no fault posted, no event sent
    assert code == 2
    assert [(r.method, r.path) for r in stub_server.requests] == [("GET", "/_sandbox/faults")]
    assert "--fault works on sandboxes only: IFEELGOODS_BASE_URL" in capsys.readouterr().err


def test_the_real_provider_is_not_even_asked(cli_env, stub_server, capsys):
    # given no sandbox: IFEELGOODS_BASE_URL is unset, so it is the vendor's own API

    # when
    code = main(["send", "--fault", "permanent:422", "--url", stub_server.url])

    # then
    assert code == 2
    assert stub_server.requests == []
    assert "IFEELGOODS_BASE_URL is the real ifeelgoods API" in capsys.readouterr().err
