"""``rewardrelay worker`` (the Procfile's worker process): ``WORKER_PROCESSES`` Celery
workers that all consume the task queue, and go down together when one dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest

from sandboxes import SandboxControl
from tests.integration.conftest import Stack, coniq_reward
from worker.celery_app import FULFIL_TASK, make_celery

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
        return [int(child) for child in listing.read().split()]


def _fulfilled_by_node(stack: Stack, names: list[str]) -> dict[str, int]:
    """Fulfilment tasks each Celery node has run, from its own stats (remote control)."""
    app = make_celery(stack.settings)
    try:
        stats = app.control.inspect(destination=names, timeout=3).stats() or {}
    finally:
        app.close()
    return {node: int(s.get("total", {}).get(FULFIL_TASK, 0)) for node, s in stats.items()}


def test_two_worker_processes_each_take_a_share_of_the_units(
    make_stack: Any, ifeelgoods: SandboxControl, rewardops: SandboxControl
) -> None:
    # given `rewardrelay worker` with WORKER_PROCESSES=2 of 2 threads each, and providers
    # that take 200 ms, so one process alone cannot hold every unit at once
    stack = make_stack(worker=False)
    for sandbox in (ifeelgoods, rewardops):
        sandbox.set_faults({"kind": "latency", "ms": 200})
    name = f"wp-{stack.prefix}"
    stack.start_worker_command(processes=2, concurrency=2, name=name)

    # when 12 rewards are sent
    events = [coniq_reward() for _ in range(12)]
    for event in events:
        assert stack.send(event).status_code == 202

    # then every one is fulfilled, exactly once
    for event in events:
        view = stack.wait_terminal(event["id"])
        assert [u["state"] for u in view["units"]] == ["fulfilled"], view
    # and both processes, named NAME-1@host and NAME-2@host, ran fulfilment tasks
    host = os.uname().nodename
    nodes = [f"{name}-1@{host}", f"{name}-2@{host}"]
    ran = _fulfilled_by_node(stack, nodes)
    assert sorted(ran) == nodes, ran
    assert all(count > 0 for count in ran.values()), ran
    assert sum(ran.values()) >= len(events), ran


def test_when_one_worker_process_dies_the_command_stops_the_other_and_fails(
    make_stack: Any,
) -> None:
    # given `rewardrelay worker` running two processes
    stack = make_stack(worker=False)
    command = stack.start_worker_command(processes=2)
    first, second = _children(command.pid)

    # when one of them is killed
    os.kill(first, signal.SIGKILL)

    # then the command stops the other one and exits non-zero (a process manager restarts it)
    try:
        code = command.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("rewardrelay worker kept running with one process dead")
    assert code != 0
    deadline = time.time() + 5
    while time.time() < deadline and os.path.exists(f"/proc/{second}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{second}")


def test_sigterm_stops_every_worker_process_and_exits_0(make_stack: Any) -> None:
    # given `rewardrelay worker` running two processes
    stack = make_stack(worker=False)
    command = stack.start_worker_command(processes=2)
    children = _children(command.pid)
    assert len(children) == 2

    # when the command alone gets SIGTERM (as a process manager stops it)
    command.send_signal(signal.SIGTERM)

    # then both Celery workers shut down warm and the command exits 0
    assert command.wait(timeout=60) == 0
    assert not any(os.path.exists(f"/proc/{child}") for child in children)
