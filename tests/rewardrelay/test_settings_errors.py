"""A bad setting stops a command with one line naming the variable, and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRETS", "_URL", "TOKEN"))}
    base.update({"RR_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}, **env)
    return subprocess.run(
        [sys.executable, "-m", "rewardrelay.cli", *args],
        env=base, cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "variable"),
    [
        (["send"], {"CONIQ_WEBHOOK_SECRETS": "not-a-secret"}, "CONIQ_WEBHOOK_SECRETS"),
        (["status", "evt_1"], {"PORT": "eighty"}, "PORT"),
        (["dlq", "list"], {"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
        (["relay"], {}, "REDIS_URL"),
        (["relay"], {"REDIS_URL": "http://nope"}, "REDIS_URL"),
        (["worker"], {"WORKER_PROCESSES": "0"}, "WORKER_PROCESSES"),
        (["run", "--no-flower"], {"WORKER_PROCESSES": "many"}, "WORKER_PROCESSES"),
        (["run", "--no-flower"], {"RULES_FILE": "/nonexistent/rules.toml"}, "RULES_FILE"),
    ],
)
def test_prints_one_line_and_exits_2(tmp_path, args, env, variable):
    # when
    result = _run(args, env, tmp_path)

    # then
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1
    assert lines[0].startswith(f"rewardrelay: invalid setting {variable}: ")
