"""Provider lanes end to end: real worker processes, beat, Redis and the sandboxes over HTTP.

- outage: the provider answers 503 to every call for longer than the retry horizon while
  rewards arrive; the breaker stops the calls, probes find the recovery, nothing is lost;
- funds: the provider says the budget is exhausted; the lane pauses (``funds``) instead of
  dead-lettering, probes on its own and resumes;
- a worker killed while it holds the probe does not leave the lane stuck.
The figures (calls while broken, time to drain) are logged (``-o log_cli=true``) and
written next to the test's temporary files.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tasks.providers.adapters import provider_key
from tests.conftest import TEST_ADMIN_TOKEN
from tests.integration.conftest import REPO, Stack, coniq_reward
from worker.stores.lanes import LaneStore
from worker.stores.models import TERMINAL_STATES

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

OUTAGE_SECONDS = 36.0  # longer than the 30 s horizon below
LANE_ENV = {
    # At least LANE_BREAKER_FAILURES (5): a unit's own failures count towards the breaker,
    # so it cannot use up its attempts before the lane breaks. With 3, the first unit of
    # an outage was dead-lettered whenever its retries outran the next arrivals (it spent
    # 2 of its 3 before the breaker tripped in every measured run).
    "RETRY_MAX_ATTEMPTS": "5",
    "RETRY_BASE_SECONDS": "0.2",
    "RETRY_MAX_DELAY_SECONDS": "1",
    "RETRY_HORIZON_SECONDS": "30",
    "LANE_PROBE_SECONDS": "2",
    "LANE_FUNDS_PROBE_SECONDS": "2",
    "LANE_TICK_SECONDS": "0.5",
}


def _lanes(stack: Stack) -> LaneStore:
    return LaneStore(stack.redis, stack.keys)


def _wait_all_terminal(stack: Stack, event_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.time() + timeout
    units: list[dict[str, Any]] = []
    while time.time() < deadline:
        units = [u for e in event_ids for u in stack.fulfillment(e)["units"]]
        if len(units) == len(event_ids) and all(u["state"] in TERMINAL_STATES for u in units):
            return units
        time.sleep(0.2)
    states = sorted(u["state"] for u in units)
    raise AssertionError(f"not terminal: {states}\n{stack.worker_logs()[-4000:]}")


def _wait_lane(
    stack: Stack,
    state: str,
    timeout: float = 20,
    reason: str | None = None,
    lane: str = "ifeelgoods",
) -> None:
    deadline = time.time() + timeout
    view = _lanes(stack).view(lane)
    while time.time() < deadline:
        view = _lanes(stack).view(lane)
        if view.state == state and (reason is None or view.reason == reason):
            return
        time.sleep(0.1)
    raise AssertionError(f"lane is {view}, not {state}\n{stack.worker_logs()[-3000:]}")


def test_outage_longer_than_the_horizon_loses_nothing_and_calls_little(
    make_stack: Any, ifeelgoods, tmp_path
) -> None:
    # given a provider that answers 503 to every call, and a stack with a short horizon
    stack: Stack = make_stack(LANE_ENV)
    stack.start_beat()
    ifeelgoods.set_faults({"kind": "status", "status": 503})
    outage_started = time.time()

    # when 40 rewards arrive during the outage
    events = [coniq_reward() for _ in range(40)]
    for event in events:
        assert stack.send(event).status_code == 202
        time.sleep(0.2)
    _wait_lane(stack, "broken")
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.time() - outage_started)))
    calls_while_down = ifeelgoods.counters()["requests"]
    waiting_at_recovery = _lanes(stack).view("ifeelgoods").waiting
    ifeelgoods.clear_faults()
    recovered = time.time()
    units = _wait_all_terminal(stack, [e["id"] for e in events], timeout=60)
    drained = time.time() - recovered

    # then every reward was fulfilled once, none dead-lettered, and the outage cost fewer
    # provider calls than there were units
    assert sorted({u["state"] for u in units}) == ["fulfilled"]
    assert stack.dead_letters.waiting_count() == 0
    assert all(ifeelgoods.issued(provider_key(u["id"])) == 1 for u in units)
    assert calls_while_down < len(events)
    assert _lanes(stack).view("ifeelgoods").state == "open"
    figures = {
        "units": len(events),
        "outage_seconds": round(recovered - outage_started, 1),
        "provider_calls_during_outage": calls_while_down,
        "units_waiting_at_recovery": waiting_at_recovery,
        "seconds_to_drain_after_recovery": round(drained, 2),
    }
    log.info("outage figures %s", json.dumps(figures))
    (tmp_path / "outage-figures.json").write_text(json.dumps(figures))


# Per provider: the offer its rule routes, and the [DESIGN] answer for money run out.
FUNDS_CASES = {
    "ifeelgoods": (
        "1001",
        {
            "method": "POST",
            "path": "*/actions/redeem",
            "kind": "permanent",
            "status": 422,
            "error": "no_allocation",
            "message": "The promotion's budget is exhausted.",
        },
    ),
    "rewardops": (
        "2002",
        {
            "method": "POST",
            "path": "/api/v4/programs/*/orders",
            "kind": "permanent",
            "status": 400,
            "error": "program cap internal",
            "message": "The program's cap is reached.",
        },
    ),
}


@pytest.mark.parametrize("provider", sorted(FUNDS_CASES))
def test_funds_exhausted_pauses_the_lane_and_it_resumes_by_itself(
    make_stack: Any, ifeelgoods, rewardops, tmp_path, provider: str
) -> None:
    # given a provider whose budget or programme cap is exhausted
    sandbox = {"ifeelgoods": ifeelgoods, "rewardops": rewardops}[provider]
    offer, fault = FUNDS_CASES[provider]
    stack: Stack = make_stack(LANE_ENV)
    stack.start_beat()
    sandbox.set_faults(fault)
    events = [coniq_reward(offer) for _ in range(10)]
    for event in events:
        assert stack.send(event).status_code == 202

    # then the lane pauses for funds, and nothing is dead-lettered while it waits
    _wait_lane(stack, "paused", reason="funds", lane=provider)
    paused_at = time.time()
    time.sleep(6)
    view = _lanes(stack).view(provider)
    assert (view.state, view.reason) == ("paused", "funds")
    assert stack.dead_letters.waiting_count() == 0
    refusals = sandbox.counters()["faults_injected"].get("permanent", 0)

    # when the budget is topped up
    sandbox.clear_faults()
    topped_up = time.time()
    units = _wait_all_terminal(stack, [e["id"] for e in events], timeout=40)
    drained = time.time() - topped_up

    # then the lane resumed by itself and each reward was issued once
    assert sorted({u["state"] for u in units}) == ["fulfilled"]
    assert stack.dead_letters.waiting_count() == 0
    assert all(sandbox.issued(provider_key(u["id"])) == 1 for u in units)
    assert _lanes(stack).view(provider).state == "open"
    actions = [entry["action"] for entry in _lanes(stack).audit_log()]
    assert actions[-1] == "paused" and "opened" in actions
    figures = {
        "provider": provider,
        "units": len(events),
        "paused_seconds": round(topped_up - paused_at, 1),
        "refused_calls_while_paused": refusals,
        "seconds_to_drain_after_top_up": round(drained, 2),
    }
    log.info("funds figures %s", json.dumps(figures))
    (tmp_path / "funds-figures.json").write_text(json.dumps(figures))


def test_a_worker_killed_mid_probe_does_not_leave_the_lane_stuck(
    make_stack: Any, ifeelgoods
) -> None:
    # given a broken lane whose probe hangs in the provider
    stack: Stack = make_stack({**LANE_ENV, "LANE_BREAKER_FAILURES": "1"}, worker=False)
    stack.start_beat()
    doomed = stack.start_worker(concurrency=1, name="doomed")
    ifeelgoods.set_faults({"kind": "status", "status": 503, "times": 1})
    first = coniq_reward()
    assert stack.send(first).status_code == 202
    _wait_lane(stack, "broken")
    ifeelgoods.set_faults({"kind": "latency", "ms": 30_000})
    deadline = time.time() + 20
    while not _lanes(stack).view("ifeelgoods").probing:
        assert time.time() < deadline, stack.worker_logs()[-3000:]
        time.sleep(0.05)

    # when the worker holding the probe is killed
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    stack.workers.remove(doomed)
    ifeelgoods.clear_faults()
    stack.start_worker(concurrency=1, name="survivor")

    # then the probe lease runs out, another probe succeeds and the unit is fulfilled once
    view = stack.wait_terminal(first["id"], timeout=40)
    assert view["units"][0]["state"] == "fulfilled"
    assert ifeelgoods.issued(provider_key(view["units"][0]["id"])) == 1
    _wait_lane(stack, "open")


def _cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    """``rewardrelay lanes ...`` as an operator runs it: its own process, the stack's env."""
    env = {**stack.env, "RR_DATA_DIR": str(stack.tmp / "cli-data")}
    return subprocess.run(
        [sys.executable, "-m", "rewardrelay.cli", "lanes", *argv, "--url", stack.edge_url],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_pause_from_the_cli_holds_both_workers_and_resume_from_the_api_drains(
    make_stack: Any, ifeelgoods
) -> None:
    # given a stack with two worker processes
    stack: Stack = make_stack(LANE_ENV)
    stack.start_worker(name="second")
    stack.start_beat()

    # when an operator pauses the Ifeelgoods lane from the command line
    paused = _cli(stack, "pause", "ifeelgoods", "--reason", "vendor maintenance")
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout and "vendor maintenance" in paused.stdout
    events = [coniq_reward() for _ in range(8)]
    for event in events:
        assert stack.send(event).status_code == 202

    # then both workers take units, and no provider call is made while paused
    deadline = time.time() + 20
    while _lanes(stack).view("ifeelgoods").waiting < len(events):
        assert time.time() < deadline, stack.worker_logs()[-3000:]
        time.sleep(0.1)
    time.sleep(1.5)
    assert ifeelgoods.counters()["requests"] == 0
    worker_logs = [
        p.read_text() for p in sorted(stack.tmp.glob("w*.log")) + [stack.tmp / "second.log"]
    ]
    assert all("tasks.fulfill_reward" in text for text in worker_logs if text)
    listing = _cli(stack, "--json")
    assert listing.returncode == 0, listing.stderr
    lanes = {item["provider"]: item for item in json.loads(listing.stdout)["items"]}
    assert lanes["ifeelgoods"]["state"] == "paused"
    assert lanes["ifeelgoods"]["units_waiting"] == len(events)
    # waiting used none of the units' attempt budget
    waiting_ids = [u["id"] for e in events for u in stack.fulfillment(e["id"])["units"]]
    assert all(stack.ledger.round_attempts(uid) == 0 for uid in waiting_ids)

    # when it is resumed through the admin API
    response = stack.http.post(
        f"{stack.edge_url}/lanes/ifeelgoods/resume",
        headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"},
        json={"reason": "window over", "by": "ana"},
    )
    assert response.status_code == 200

    # then every reward is fulfilled once, and the audit log says who did what
    units = _wait_all_terminal(stack, [e["id"] for e in events], timeout=30)
    assert sorted({u["state"] for u in units}) == ["fulfilled"]
    assert all(ifeelgoods.issued(provider_key(u["id"])) == 1 for u in units)
    log_entries = _lanes(stack).audit_log()
    assert [(e["action"], e["by"]) for e in log_entries][:1] == [("resume", "ana")]
    assert log_entries[1]["action"] == "pause" and log_entries[1]["by"].startswith("cli:")
    table = _cli(stack)
    assert table.returncode == 0 and "ifeelgoods" in table.stdout and "open" in table.stdout


def test_a_broken_lane_sends_one_sentry_event_not_one_per_unit(make_stack: Any, ifeelgoods) -> None:
    from tests.sentry_inbox import SentryInbox, error_events

    # given a Sentry DSN on loopback and a provider that is down
    sentry = SentryInbox()
    threading.Thread(target=sentry.serve_forever, daemon=True).start()
    dsn = sentry.dsn
    stack: Stack = make_stack({**LANE_ENV, "SENTRY_DSN": dsn, "LANE_BREAKER_FAILURES": "2"})
    stack.start_beat()
    ifeelgoods.set_faults({"kind": "status", "status": 503})

    # when ten rewards meet the outage and the lane's probes keep failing
    for _ in range(10):
        assert stack.send(coniq_reward()).status_code == 202
    _wait_lane(stack, "broken")
    time.sleep(5)  # a couple of failed probes
    assert _lanes(stack).view("ifeelgoods").state == "broken"

    # then exactly one Sentry event, for the transition, tagged with the lane
    received = error_events(sentry.envelopes)
    sentry.shutdown()
    assert len(received) == 1, [e.get("message") for e in received]
    tags = dict(received[0]["tags"])
    assert tags["lane"] == "ifeelgoods" and tags["lane_state"] == "broken"
    assert "ada@example.com" not in json.dumps(received)
