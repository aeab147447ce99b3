"""With the stack down, a command says what is missing and how to start it: one line on
stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ADMIN_TOKEN, CONIQ_SECRET, EVENT_SECRET

REPO = Path(__file__).resolve().parents[2]
DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there
RECEIVER_LINE = (
    f"rewardrelay: cannot reach the receiver at {DOWN} (connection refused) — "
    "start `rewardrelay run`, or give --url / set RECEIVER_URL"
)


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRETS", "_URL", "TOKEN"))}
    base.update(
        RR_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(REPO),
        CONIQ_WEBHOOK_SECRETS=CONIQ_SECRET,
        EVENT_SECRETS=EVENT_SECRET,
        ADMIN_TOKEN=ADMIN_TOKEN,
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "rewardrelay.cli", *args],
        env=base, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status", "evt_1"], 4),
        (["dlq", "list"], 1),
        (["dlq", "show", "evt_1:0:0"], 1),
        (["dlq", "replay", "--all"], 1),
        (["console"], 1),
    ],
)
def test_receiver_down_is_one_line_naming_the_fix(tmp_path, args, code):
    # when the receiver is found through RECEIVER_URL and nothing listens there
    result = _run(args, tmp_path, RECEIVER_URL=DOWN)

    # then
    assert result.returncode == code, result.stderr
    assert result.stderr.strip().splitlines() == [RECEIVER_LINE]


def test_send_with_the_receiver_down_still_prints_the_event_id(tmp_path):
    # when
    result = _run(["send", "--url", DOWN], tmp_path)

    # then
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [RECEIVER_LINE]
    assert result.stdout.strip().startswith("evt_")


def test_redis_down_is_one_line_naming_the_fix(tmp_path):
    # when `connect` would store a token in a Redis that is not there
    result = _run(
        ["connect", "orders-platform", "--timeout", "1"],
        tmp_path,
        REDIS_URL="redis://:hunter2@127.0.0.1:9/0",
        ORDERS_BASE_URL="http://127.0.0.1:9",
        ORDERS_CLIENT_ID="op-1",
        ORDERS_CLIENT_SECRET="ops-1",
    )

    # then (and the URL's password is not shown)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "rewardrelay: cannot reach Redis at redis://:***@127.0.0.1:9/0 — "
        "start `rewardrelay run`, or set REDIS_URL"
    ]


def test_check_names_the_fix_for_redis(tmp_path):
    # when
    result = _run(["check"], tmp_path, REDIS_URL="redis://127.0.0.1:9/0")

    # then
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        "FAIL redis redis://127.0.0.1:9/0: cannot connect — start `rewardrelay run`, "
        "or set REDIS_URL"
    ) in result.stdout.splitlines()
