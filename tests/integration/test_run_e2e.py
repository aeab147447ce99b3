"""``rewardrelay run`` as a user starts it: the whole stack on embedded defaults.

No REDIS_URL, no credentials, no secrets: the command starts an embedded Redis (with
append-only persistence in the data directory), both sandboxes, web, worker, beat and
relay; ``rewardrelay send`` then ``rewardrelay status`` show a fulfilled reward. A second
``run`` on the same data directory still knows the first run's event.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RUNNING_BANNER = b"rewardrelay is running"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(data_dir: Path, port: int) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({"RR_DATA_DIR": str(data_dir), "PORT": str(port), "PYTHONPATH": str(REPO)})
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rewardrelay.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewardrelay.cli", "run", "--no-flower"],
        env=env,
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if RUNNING_BANNER in log.read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"run did not come up:\n{log.read_text(errors='replace')[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_run_send_status_shows_a_fulfilled_reward_and_survives_a_restart(tmp_path: Path) -> None:
    # given `rewardrelay run` with nothing configured
    env = _clean_env(tmp_path / "data", _free_port())
    proc = _start(env, tmp_path / "run1.log")
    try:
        # when a sample Coniq reward is sent and its status awaited
        sent = _cli(env, "send")
        event_id = sent.stdout.strip().splitlines()[-1]
        status = _cli(env, "status", event_id, "--wait", "30")

        # then the receiver accepted it and the reward was fulfilled (exit 0)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert event_id.startswith("evt_")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "fulfilled" in status.stdout
        # and the orders-platform sandbox was connected for the user (issue 6)
        assert b"orders-platform sandbox connected" in (tmp_path / "run1.log").read_bytes()
        # and the worker is WORKER_PROCESSES (default 2) Celery workers, each one ready
        run_log = (tmp_path / "run1.log").read_text(errors="replace")
        for index in (1, 2):
            assert re.search(rf"rewardrelay-{env['PORT']}-{index}@\S+ ready\.", run_log), index
        # and /metrics sums the web (gunicorn) and worker (Celery child) processes
        wanted = ('rewardrelay_events_accepted_total{source="coniq"} 1.0', 'state="fulfilled"')
        deadline, metrics = time.time() + 10, ""
        while time.time() < deadline and not all(w in metrics for w in wanted):
            metrics = httpx.get(f"http://127.0.0.1:{env['PORT']}/metrics", timeout=5).text
            time.sleep(0.2)
        assert all(w in metrics for w in wanted), metrics
    finally:
        exit_code = _stop(proc)

    # and Ctrl-C stopped everything cleanly, embedded Redis included
    run_log = (tmp_path / "run1.log").read_text(errors="replace")
    assert exit_code == 0, run_log[-3000:]
    # without a logging traceback from any process (gunicorn's "Worker exiting" lines)
    assert "Logging error" not in run_log, run_log[-3000:]
    redis_data = tmp_path / "data" / "redis"
    assert any(redis_data.rglob("*.aof*")), "append-only file expected in the data dir"

    # when the stack is started again on the same data directory
    proc = _start(env, tmp_path / "run2.log")
    try:
        again = _cli(env, "status", event_id, "--json")
    finally:
        _stop(proc)

    # then the first run's event and its outcome were kept
    assert again.returncode == 0, again.stdout + again.stderr
    assert '"fulfilled"' in again.stdout
