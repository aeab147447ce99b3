"""Sentry and Flower, end to end with real processes.

Sentry: a loopback HTTP server is the DSN's host, so the worker's real sentry-sdk
transport posts real envelopes to it. Flower: a real Flower process watches the real
worker's events and answers its HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import IFG_SECRET, REPO, ROPS_SECRET, Stack, coniq_reward
from tests.sentry_inbox import SentryInbox, error_events

pytestmark = pytest.mark.integration


def test_each_dead_letter_sends_exactly_one_sentry_event_without_secrets(
    make_stack: Any, ifeelgoods
) -> None:
    # given a Sentry DSN on loopback and a provider that refuses every order after retries
    sentry = SentryInbox()
    threading.Thread(target=sentry.serve_forever, daemon=True).start()
    dsn = sentry.dsn
    # (the lane's breaker would otherwise hold the units instead of dead-lettering them)
    stack: Stack = make_stack(
        {
            "SENTRY_DSN": dsn,
            "RETRY_MAX_ATTEMPTS": "3",
            "SENTRY_ENVIRONMENT": "staging-eu",
            "LANE_BREAKER_FAILURES": "1000",
        }
    )
    ifeelgoods.set_faults(
        {
            "method": "POST",
            "path": "/fulfillment/v2/promotions/1/rewards/*/redemptions/actions/redeem",
            "kind": "status",
            "status": 503,
        }
    )
    events = [coniq_reward() for _ in range(2)]

    # when two rewards are retried to exhaustion and dead-lettered
    for event in events:
        stack.send(event)
    for event in events:
        assert stack.wait_terminal(event["id"])["units"][0]["state"] == "dead_lettered"
    deadline = time.time() + 15
    while time.time() < deadline and len(error_events(sentry.envelopes)) < 2:
        time.sleep(0.2)
    time.sleep(1.5)  # give a duplicate (if any) the chance to arrive

    # then exactly one Sentry event per dead letter, tagged, with no secret or code
    received = error_events(sentry.envelopes)
    sentry.shutdown()
    assert len(received) == 2
    unit_ids = {f"{e['id']}:0:0" for e in events}
    assert {dict(ev["tags"])["unit_id"] for ev in received} == unit_ids
    for ev in received:
        tags = dict(ev["tags"])
        assert tags["event_id"] == tags["unit_id"].rsplit(":", 2)[0]
        assert tags["provider"] == "ifeelgoods"
        assert ev["environment"] == "staging-eu"
        # the breadcrumbs (log lines of the unit's attempts) carry the same ids
        crumbs = [c for c in ev.get("breadcrumbs", {}).get("values", []) if c.get("data")]
        about_unit = [c for c in crumbs if c["data"].get("unit_id") == tags["unit_id"]]
        assert about_unit, crumbs
        assert all(c["data"].get("event_id") == tags["event_id"] for c in about_unit)
        assert any(c["data"].get("provider") == "ifeelgoods" for c in about_unit)
    raw = b"".join(sentry.envelopes).decode(errors="replace")
    for secret in (
        IFG_SECRET,
        ROPS_SECRET,
        stack.settings.admin_token,
        "whsec_",
        "ada@example.com",
    ):
        assert secret not in raw


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_flower_lists_fulfilment_tasks_by_name_and_state_without_personal_data(
    stack: Stack, ifeelgoods
) -> None:
    # given a real Flower process watching the real worker
    port = _free_port()
    flower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env={**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(1.0)  # let Flower subscribe to the event stream
        events = [coniq_reward() for _ in range(3)]

        # when rewards are fulfilled
        for event in events:
            stack.send(event)
        for event in events:
            stack.wait_terminal(event["id"])
        tasks: dict[str, Any] = {}
        deadline = time.time() + 15
        while time.time() < deadline:
            tasks = httpx.get(f"http://127.0.0.1:{port}/api/tasks", timeout=5).json()
            done = [t for t in tasks.values() if t.get("state") == "SUCCESS"]
            if len(done) >= 3:
                break
            time.sleep(0.3)

        # then Flower lists them by name and state, and their arguments are unit ids only
        fulfil = [t for t in tasks.values() if t.get("name") == "tasks.fulfill_reward"]
        assert len([t for t in fulfil if t["state"] == "SUCCESS"]) >= 3
        unit_ids = {f"{e['id']}:0:0" for e in events}
        seen_args = " ".join(str(t.get("args")) + str(t.get("kwargs")) for t in fulfil)
        assert all(uid in seen_args for uid in unit_ids)
        dump = json.dumps(tasks)
        for private in ("ada@example.com", "Lovelace", IFG_SECRET):
            assert private not in dump
        codes = [c for e in events for c in stack.ledger.codes(f"{e['id']}:0:0")]
        assert codes and not any(code in dump for code in codes)
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=10)


def _start_flower(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.app", "flower", f"--port={port}",
         "--address=127.0.0.1"],
        env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    time.sleep(1.0)  # let Flower subscribe to the event stream
    return flower, url


def test_flower_lists_a_dead_lettered_reward_as_failed_and_no_sweeps_and_beat_logs_json(
    make_stack: Any, ifeelgoods: Any, tmp_path: Any
) -> None:
    # given the worker, beat sweeping every second (at DEBUG, in JSON), and Flower
    stack: Stack = make_stack({"LOG_FORMAT": "json"})
    beat_log = tmp_path / "beat.log"
    with open(beat_log, "wb") as out:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "-l", "debug",
             "-s", str(tmp_path / "beat-schedule")],
            env=stack.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    flower, url = _start_flower(stack.env)
    try:
        # when one reward is refused for good by the provider (dead letter), one fulfilled
        ifeelgoods.set_faults(
            {
                "method": "POST",
                "path": "/fulfillment/v2/promotions/*/redemptions/actions/redeem",
                "kind": "permanent",
                "status": 422,
                "times": 1,
            }
        )
        dead, fine = coniq_reward(), coniq_reward()
        stack.send(dead)
        assert stack.wait_terminal(dead["id"])["units"][0]["state"] == "dead_lettered"
        stack.send(fine)
        assert stack.wait_terminal(fine["id"])["units"][0]["state"] == "fulfilled"
        time.sleep(3.0)  # several sweeps
        tasks: dict[str, Any] = {}
        deadline = time.time() + 15
        while time.time() < deadline:
            tasks = httpx.get(f"{url}/api/tasks", timeout=5).json()
            states = {str(t.get("args")): t.get("state") for t in tasks.values()}
            if any(dead["id"] in a and s == "FAILURE" for a, s in states.items()):
                break
            time.sleep(0.3)
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        os.killpg(beat.pid, signal.SIGTERM)
        flower.wait(timeout=10)
        beat.wait(timeout=10)

    # then Flower lists the dead-lettered reward as failed, the fulfilled one as a success
    by_unit = {str(t.get("args")): t for t in tasks.values() if t.get("name")}
    [failed] = [t for a, t in by_unit.items() if dead["id"] in a]
    assert failed["state"] == "FAILURE"
    assert "RewardFailed" in str(failed.get("exception"))
    assert any(fine["id"] in a and t["state"] == "SUCCESS" for a, t in by_unit.items())
    # (other stacks on this broker send events too: ours are our worker's, by its name)
    ours = [t for t in tasks.values() if stack.prefix in str(t.get("worker"))]
    assert failed in ours
    # and it was not retried by Celery: no RETRY state
    assert all(t.get("state") != "RETRY" for t in ours)
    # and the sweep, every second, is not in Flower's list
    assert not [t for t in ours if t.get("name") == "tasks.sweep"], ours
    # and the worker (at INFO) does not log each sweep's "received" / "succeeded"
    assert "tasks.sweep[" not in stack.worker_logs()
    # and beat's own lines are JSON, its routine "Sending due task" lines at DEBUG only
    lines = [json.loads(line) for line in _log_lines(beat_log)]
    sending = [line for line in lines if "Sending due task" in line["msg"]]
    assert len(sending) >= 3
    assert {line["level"] for line in sending} == {"debug"}
    assert any(line["logger"] == "celery.beat" for line in lines)


def _log_lines(path: Any) -> list[str]:
    """The log lines of a Celery program's output: JSON objects, or Celery's own
    "[2026-... INFO/MainProcess] ..." text lines (its start-up banner is not logging)."""
    return [
        line
        for line in path.read_text(errors="replace").splitlines()
        if line.startswith("{") or re.match(r"\[\d{4}-", line)
    ]
