"""Fault injection: rule parsing and selection, and each fault kind on the live sandboxes."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from sandboxes import FaultKind, FaultSpecError, SandboxControl
from sandboxes.faults import FaultInjector, parse_fault_header, parse_rules

USER = {"email": "ada@example.com"}
REDEEM_PATH = "/promotions/1/rewards/AMZ-25USD-US/redemptions/actions/redeem"


def rule(**fields):
    rules, _seed, _append = parse_rules({"rules": [fields]})
    return rules


def test_times_rule_hits_exactly_the_next_n_matching_requests() -> None:
    # given
    injector = FaultInjector()
    injector.set_rules(rule(method="POST", path="/x/*", kind="status", times=2), append=False)
    # when
    picks = [injector.pick("POST", "/x/1"), injector.pick("GET", "/x/1")]
    picks += [injector.pick("POST", "/x/2"), injector.pick("POST", "/x/3")]
    # then
    assert [p.kind if p else None for p in picks] == [
        FaultKind.STATUS,
        None,
        FaultKind.STATUS,
        None,
    ]
    assert injector.injected == {"status": 2}


def test_skip_lets_the_first_matches_through() -> None:
    # given
    injector = FaultInjector()
    injector.set_rules(rule(kind="latency", ms=1, skip=2, times=1), append=False)
    # when
    picks = [injector.pick("GET", "/a") for _ in range(4)]
    # then
    assert [p is not None for p in picks] == [False, False, True, False]


def test_rate_rule_with_same_seed_is_reproducible() -> None:
    # given
    def run() -> list[bool]:
        injector = FaultInjector()
        injector.set_rules(rule(kind="status", rate=0.3), seed=11, append=False)
        return [injector.pick("GET", "/a") is not None for _ in range(200)]

    # when
    first, second = run(), run()
    # then
    assert first == second
    assert 30 < sum(first) < 90


@pytest.mark.parametrize(
    ("header", "kind", "attr", "value"),
    [
        ("status:502", FaultKind.STATUS, "status", 502),
        ("rate_limit:3", FaultKind.RATE_LIMIT, "retry_after", "3"),
        ("latency:250", FaultKind.LATENCY, "ms", 250),
        ("commit_then_timeout:1.5", FaultKind.COMMIT_THEN_TIMEOUT, "seconds", 1.5),
        ("token_expired", FaultKind.TOKEN_EXPIRED, "status", 401),
        (
            '{"kind": "permanent", "status": 400, "error": "bad_request"}',
            FaultKind.PERMANENT,
            "status",
            400,
        ),
    ],
)
def test_header_shorthand_and_json_forms_parse(header, kind, attr, value) -> None:
    # given / when
    fault = parse_fault_header(header)
    # then
    assert fault.kind is kind
    assert getattr(fault, attr) == value


@pytest.mark.parametrize(
    "payload",
    [
        {"rules": [{"kind": "explode"}]},
        {"rules": [{"kind": "status", "status": 404}]},
        {"rules": [{"kind": "status", "times": 1, "rate": 0.5}]},
        {"rules": [{"kind": "latency", "ms": "soon"}]},
        {"rules": "nope"},
        [],
    ],
)
def test_invalid_rules_are_rejected(payload) -> None:
    # given / when / then
    with pytest.raises(FaultSpecError):
        parse_rules(payload)


def test_posting_invalid_rules_answers_400_and_keeps_old_rules(ifg_control: SandboxControl) -> None:
    # given
    ifg_control.set_faults({"kind": "latency", "ms": 1})
    # when
    response = httpx.post(f"{ifg_control.url}/_sandbox/faults", json={"rules": [{"kind": "x"}]})
    # then
    assert response.status_code == 400 and "kind" in response.json()["error"]
    assert len(httpx.get(f"{ifg_control.url}/_sandbox/faults").json()["rules"]) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_status_fault_returns_provider_error_body(ifg: httpx.Client, status: int) -> None:
    """providers.md 1.5 [DESIGN]: 5xx with internal_error body."""
    # given / when
    response = ifg.get("/accounts/me", headers={"X-Sandbox-Fault": f"status:{status}"})
    # then
    assert response.status_code == status
    assert response.json()["error_name"] == "internal_error"


def test_status_fault_without_body_is_empty(ro: httpx.Client) -> None:
    """providers.md 2.3 [PUB S4]: 4xx/5xx with no body (e.g. 504) must be handled."""
    # given / when
    response = ro.get(
        "/programs/12/orders",
        params={"member_id": "m"},
        headers={"X-Sandbox-Fault": '{"kind": "status", "status": 504, "body": false}'},
    )
    # then
    assert response.status_code == 504 and response.content == b""


def test_rate_limit_fault_is_429_with_retry_after(ro: httpx.Client) -> None:
    """providers.md 2.10 [DESIGN]: 429 + Retry-After in fault-injection mode."""
    # given / when
    response = ro.get(
        "/programs/12/orders",
        params={"member_id": "m"},
        headers={"X-Sandbox-Fault": "rate_limit:4"},
    )
    # then
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "4"
    assert response.json()["result"]["error"]["code"] == 429


def test_latency_fault_delays_but_answers_normally(ifg: httpx.Client) -> None:
    # given
    started = time.monotonic()
    # when
    response = ifg.get("/accounts/me", headers={"X-Sandbox-Fault": "latency:150"})
    # then
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.15


def test_token_expired_fault_is_401_even_with_valid_token(ro: httpx.Client) -> None:
    # given / when
    response = ro.get(
        "/programs/12/orders",
        params={"member_id": "m"},
        headers={"X-Sandbox-Fault": "token_expired"},
    )
    # then
    assert response.status_code == 401
    assert "expired" in response.headers["WWW-Authenticate"]


def test_permanent_fault_uses_given_error_name(ifg: httpx.Client) -> None:
    # given
    header = '{"kind": "permanent", "status": 422, "error": "invalid_user"}'
    # when
    response = ifg.post(
        REDEEM_PATH,
        json={"data": {"order_id": "o", "user": USER}},
        headers={"X-Sandbox-Fault": header},
    )
    # then
    assert response.status_code == 422 and response.json()["error_name"] == "invalid_user"


def test_commit_then_timeout_commits_the_write_before_the_client_gives_up(
    ro: httpx.Client, ro_control: SandboxControl
) -> None:
    # given
    ro_control.set_faults(
        {
            "method": "POST",
            "path": "/api/v4/programs/*/orders",
            "kind": "commit_then_timeout",
            "seconds": 1,
            "times": 1,
        }
    )
    body = {
        "program_order_id": "po-ctt",
        "member": {"id": "m"},
        "items": [
            {
                "item_order_token": "tok-gift-25",
                "quantity": 1,
                "member_spend": {"currency_code": "USD", "amount": "0"},
            }
        ],
    }
    # when
    with pytest.raises(httpx.ReadTimeout):
        ro.post("/programs/12/orders", json=body, timeout=0.2)
    # then
    assert ro_control.issued("po-ctt") == 1
    found = ro.get("/programs/12/orders/po-ctt", params={"use_program_order_id": "true"})
    assert found.status_code == 200


def test_counters_count_requests_and_injected_faults_but_not_control_calls(
    ifg: httpx.Client, ifg_control: SandboxControl
) -> None:
    # given
    ifg.get("/accounts/me")
    ifg.get("/accounts/me", headers={"X-Sandbox-Fault": "status:503"})
    # when
    counters = ifg_control.counters()
    # then
    assert counters["requests"] == 2
    assert counters["faults_injected"] == {"status": 1}


def test_malformed_fault_header_is_400(ifg: httpx.Client) -> None:
    # given / when
    response = ifg.get("/accounts/me", headers={"X-Sandbox-Fault": "meteor:1"})
    # then
    assert response.status_code == 400 and response.json()["error_name"] == "bad_request"


def test_reset_clears_resources_counters_and_rules(
    ifg: httpx.Client, ifg_control: SandboxControl
) -> None:
    # given
    rid = ifg.post(REDEEM_PATH, json={"data": {"order_id": "o-reset", "user": USER}}).json()[
        "data"
    ]["id"]
    ifg_control.set_faults({"kind": "latency", "ms": 1})
    # when
    ifg_control.reset()
    # then
    assert ifg.get(f"/redemptions/{rid}").status_code == 404
    assert ifg_control.counters()["issued"] == {}
    assert httpx.get(f"{ifg_control.url}/_sandbox/faults").json()["rules"] == []


def test_reset_abandons_a_write_held_by_latency_so_it_never_lands_afterwards(
    ifg: httpx.Client, ifg_control: SandboxControl
) -> None:
    """A test's late write (client gone, fault still holding it) must not leak into the next."""
    # given a write held back for 3 s by a latency fault
    ifg_control.set_faults({"kind": "latency", "ms": 3000, "times": 1})
    answers: list[httpx.Response] = []
    body = {"data": {"order_id": "o-held", "user": USER}}
    writer = threading.Thread(target=lambda: answers.append(ifg.post(REDEEM_PATH, json=body)))
    writer.start()
    deadline = time.monotonic() + 10
    while ifg_control.counters()["faults_injected"] != {"latency": 1}:
        assert time.monotonic() < deadline, "the held write never reached the sandbox"
        time.sleep(0.01)
    # when the sandbox is reset while it holds the write
    ifg_control.reset()
    writer.join(timeout=10)
    # then the write is answered 503 without running, and nothing was issued after the reset
    assert [answer.status_code for answer in answers] == [503]
    assert ifg_control.counters()["issued"] == {}
