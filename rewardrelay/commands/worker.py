"""``rewardrelay worker``: ``WORKER_PROCESSES`` Celery workers on this host, a ``Procfile`` process.

One thread-pool worker process tops out well below what its threads could carry: its one
consumer thread fetches, acknowledges and publishes task events for every task, on the
same GIL as all the pool threads (bench.e2e: ~110 units/s at a 300 ms provider). Several
processes per host each bring their own. They share everything else through Redis
(ledger leases, lanes, the broker queue), so nothing else changes.

Each child is ``celery -A worker.app worker -l info -E -n NAME-i@%h`` plus the options
after ``--``. SIGTERM or SIGINT is passed on as SIGTERM (Celery's warm shutdown); when a
child exits on its own the others are stopped and the command exits with its code, so a
process manager restarts the whole set.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from rewardrelay.children import die_with_parent
from worker.config import Settings

__all__ = ["register", "worker_argv", "run_workers"]

# How long the children may take to finish their running tasks after SIGTERM (late acks
# make a task killed after this run again safely).
STOP_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker", help="run WORKER_PROCESSES Celery workers (the Procfile's worker process)"
    )
    worker.add_argument(
        "--name", default="worker", help="node names NAME-1@host, NAME-2@host, ... (default worker)"
    )
    worker.add_argument(
        "celery_options", nargs="*", metavar="CELERY_OPTION",
        help="more `celery worker` options for every process, after --",
    )  # fmt: skip
    worker.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()  # a bad WORKER_PROCESSES is a one-line error (exit 2)
    argvs = [
        worker_argv(args.name, index, args.celery_options)
        for index in range(1, settings.worker_processes + 1)
    ]
    return run_workers(argvs)


def worker_argv(name: str, index: int, options: Sequence[str] = ()) -> list[str]:
    """The command line of worker process ``index`` (from 1): task events on (Flower)."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-l", "info", "-E",
        "-n", f"{name}-{index}@%h", *options,
    ]  # fmt: skip


def run_workers(argvs: Sequence[Sequence[str]]) -> int:
    """Start one child per command line and wait: 0 after SIGTERM/SIGINT, else the exit
    code of the first child that stopped on its own (1 if it was a signal)."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[subprocess.Popen[bytes]] = []
    try:
        for argv in argvs:
            # Same process group as this command: a manager signalling the group reaches all.
            children.append(subprocess.Popen(list(argv), preexec_fn=die_with_parent))  # noqa: PLW1509 - only a prctl call
        code = 0
        while not stop.wait(POLL_SECONDS):
            ended = next((c for c in children if c.poll() is not None), None)
            if ended is not None:
                code = ended.returncode if ended.returncode > 0 else 1
                sys.stderr.write(
                    f"rewardrelay worker: process {ended.pid} exited ({ended.returncode}); "
                    "stopping the others\n"
                )
                break
        return code
    finally:
        _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(children: Sequence[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
