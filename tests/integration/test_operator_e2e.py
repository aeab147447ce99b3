"""Operator experience end to end: /metrics across processes, and JSON logs that follow
one event from webhook to outcome.

The receiver runs as real gunicorn processes (``gunicorn.conf.py``) and the worker as a
real Celery prefork pool; both share one ``PROMETHEUS_MULTIPROC_DIR``, as in production.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_ADMIN_TOKEN, TEST_CONIQ_SECRET, TEST_EVENT_SECRET
from tests.integration.conftest import IFG_SECRET, ROPS_SECRET, Stack, coniq_reward
from worker.signing import signed_headers

pytestmark = pytest.mark.integration

REDEMPTIONS = "/fulfillment/v2/promotions/*/redemptions/actions/redeem"  # create-and-redeem


def _samples(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One scrape of /metrics, parsed by prometheus_client's own text parser."""
    response = stack.http.get(stack.edge_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _send_signed_with(stack: Stack, event: dict[str, Any], secret: str) -> int:
    raw = json.dumps(event).encode()
    headers = signed_headers(raw, secret, event["id"])
    return stack.http.post(
        stack.edge_url + "/webhooks/coniq", content=raw, headers=headers
    ).status_code


def test_metrics_scrape_counts_each_outcome_from_web_and_worker_processes(
    make_stack: Any, ifeelgoods: Any, tmp_path: Path
) -> None:
    # given gunicorn (2 processes) and a Celery prefork pool sharing one metrics directory
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    stack: Stack = make_stack({"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, web="gunicorn")
    dead, retried, plain = coniq_reward(), coniq_reward(), [coniq_reward() for _ in range(2)]

    # when one event is refused permanently by the provider (dead letter),
    ifeelgoods.set_faults(
        {"method": "POST", "path": REDEMPTIONS, "kind": "permanent", "status": 422, "times": 1}
    )
    assert stack.send(dead).status_code == 202
    [dead_unit] = stack.wait_terminal(dead["id"])["units"]
    assert dead_unit["state"] == "dead_lettered"
    # and is replayed and refused again (one unit dead-lettered, counted once),
    ifeelgoods.set_faults(
        {"method": "POST", "path": REDEMPTIONS, "kind": "permanent", "status": 422, "times": 1}
    )
    replayed = stack.http.post(
        f"{stack.edge_url}/dead-letters/{dead_unit['id']}/replay",
        headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"},
    )
    assert replayed.status_code == 202, replayed.text
    deadline = time.time() + 30
    while stack.fulfillment(dead["id"])["units"][0]["state"] != "dead_lettered":
        assert time.time() < deadline, stack.fulfillment(dead["id"])
        time.sleep(0.1)
    # one meets a single 503 (one retry) and is then fulfilled,
    ifeelgoods.set_faults(
        {"method": "POST", "path": REDEMPTIONS, "kind": "status", "status": 503, "times": 1}
    )
    assert stack.send(retried).status_code == 202
    assert stack.wait_terminal(retried["id"])["units"][0]["state"] == "fulfilled"
    # two more are fulfilled and the first of them is delivered twice more (duplicates),
    for event in plain:
        assert stack.send(event).status_code == 202
    for event in plain:
        assert stack.wait_terminal(event["id"])["units"][0]["state"] == "fulfilled"
    assert [stack.send(plain[0]).status_code for _ in range(2)] == [200, 200]
    # and two requests are refused: a bad signature and an invalid body
    assert _send_signed_with(stack, coniq_reward(), TEST_EVENT_SECRET) == 401
    invalid = coniq_reward()
    del invalid["data"]["reward"]
    assert _send_signed_with(stack, invalid, TEST_CONIQ_SECRET) == 422

    # then one scrape of one web process shows every count exactly
    expected = {
        ("rewardrelay_events_received_total", ()): 8,
        ("rewardrelay_events_accepted_total", ()): 4,
        ("rewardrelay_events_duplicate_total", ()): 2,
        ("rewardrelay_events_rejected_total", (("reason", "signature-invalid"),)): 1,
        ("rewardrelay_events_rejected_total", (("reason", "validation-failed"),)): 1,
        ("rewardrelay_units_terminal_total", (("state", "fulfilled"),)): 3,
        ("rewardrelay_units_terminal_total", (("state", "dead_lettered"),)): 1,
        ("rewardrelay_retries_total", (("provider", "ifeelgoods"),)): 1,
        ("rewardrelay_provider_call_seconds_count", (("provider", "ifeelgoods"),)): 6,
        ("rewardrelay_provider_call_seconds_count", (("outcome", "permanent"),)): 2,
        ("rewardrelay_unit_pickup_delay_seconds_count", ()): 4,
        ("rewardrelay_dead_letters_waiting", ()): 1,
        ("rewardrelay_units_live", ()): 0,
        ("rewardrelay_store_up", ()): 1,
    }
    got: dict[Any, float] = {}
    deadline = time.time() + 10  # a worker counts just after the ledger says terminal
    while time.time() < deadline:
        samples = _samples(stack)
        got = {key: _value(samples, key[0], **dict(key[1])) for key in expected}
        if got == expected:
            break
        time.sleep(0.2)
    assert got == expected
    counted = {
        labels
        for (name, labels), value in samples.items()
        if name.startswith("rewardrelay_events") and value
    }
    assert all(("source", "coniq") in labels for labels in counted)
    # and the series of outcomes that did not happen are there, at 0 (for rate() / absent())
    assert samples[("rewardrelay_events_accepted_total", frozenset({("source", "internal")}))] == 0
    assert (
        samples[
            (
                "rewardrelay_units_terminal_total",
                frozenset({("state", "fulfilled"), ("provider", "rewardops")}),
            )
        ]
        == 0
    )
    assert _value(samples, "rewardrelay_units_terminal_total", provider="ifeelgoods") == 4

    # and both kinds of process wrote samples: gunicorn workers and Celery pool children
    [web, worker] = stack.workers
    written = {
        int(m) for m in re.findall(r"_(\d+)\.db$", "\n".join(map(str, metrics_dir.iterdir())), re.M)
    }
    assert written & _children(web.pid), "no gunicorn worker wrote metrics"
    assert written & _children(worker.pid), "no Celery pool child wrote metrics"


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines


def test_json_logs_follow_one_event_from_webhook_to_outcome_without_secrets(
    make_stack: Any, ifeelgoods: Any
) -> None:
    # given web and worker processes logging JSON, and a provider failing once
    stack: Stack = make_stack({"LOG_FORMAT": "json"}, web="gunicorn")
    ifeelgoods.set_faults(
        {"method": "POST", "path": REDEMPTIONS, "kind": "status", "status": 503, "times": 1}
    )
    event, other = coniq_reward(), coniq_reward()

    # when the event goes through a retry to fulfilment (and another event after it)
    assert stack.send(event).status_code == 202
    view = stack.wait_terminal(event["id"])
    assert stack.send(other).status_code == 202
    stack.wait_terminal(other["id"])
    # (the worker logs the outcome and Celery its "succeeded" just after the ledger write)
    deadline = time.time() + 15
    while True:
        logs = stack.worker_logs()
        lines = _json_lines(logs)
        finished = {line.get("event_id") for line in lines if "succeeded" in line["msg"]} >= {
            event["id"],
            other["id"],
        }
        if finished or time.time() > deadline:
            break
        time.sleep(0.2)

    # then one search by event id rebuilds its whole path, every step tagged
    [unit] = view["units"]
    assert unit["state"] == "fulfilled"
    path = [line for line in lines if line.get("event_id") == event["id"]]
    messages = [line["msg"] for line in path]
    accepted = [m for m in messages if m.startswith(f"event {event['id']}") and "accepted" in m]
    assert accepted, messages
    worker_lines = [line for line in path if line.get("unit_id")]
    assert {line["unit_id"] for line in worker_lines} == {unit["id"]}
    assert all(line.get("task_id") for line in worker_lines)
    assert len({line["task_id"] for line in worker_lines}) == 2  # first attempt + retry
    assert any(m.startswith("unit attempt 1 begins") for m in messages)
    # a 503 on a submit may have committed: the unit goes UNKNOWN, the retry looks it up
    assert any(m.startswith(("unit retry", "unit unknown")) for m in messages)
    assert any(m.startswith("unit attempt 2 begins") for m in messages)
    assert any("succeeded" in m for m in messages), "Celery's own task line is tagged too"
    [fulfilled] = [line for line in path if line["msg"] == "unit fulfilled"]
    assert fulfilled["provider"] == "ifeelgoods"
    assert fulfilled["provider_ref"] == unit["provider_ref"] != ""
    calls = [line for line in path if line["msg"].startswith("provider call")]
    assert len(calls) == 2 and all(line["provider"] == "ifeelgoods" for line in calls)
    assert calls[-1]["provider_ref"] == unit["provider_ref"]
    assert not [line for line in path if line.get("unit_id") not in (None, unit["id"])]
    assert all(line.get("event_id") != event["id"] for line in lines if other["id"] in str(line))

    # and no line holds a secret, a token, a reward code or the customer's email
    codes = stack.ledger.codes(unit["id"]) + stack.ledger.codes(f"{other['id']}:0:0")
    assert codes
    forbidden = [IFG_SECRET, ROPS_SECRET, TEST_ADMIN_TOKEN, TEST_CONIQ_SECRET, TEST_EVENT_SECRET]
    forbidden += [TEST_CONIQ_SECRET.removeprefix("whsec_"), "ada@example.com", *codes]
    for value in forbidden:
        assert value not in logs, f"leaked: {value[:6]}..."
