"""``python -m bench.e2e``: signed webhook → FULFILLED, ours vs a naive pipeline vs no-ops.

Three pipelines on the same broker (the local Redis, 127.0.0.1:6379, databases of the
benchmark's own: 9 for ours, 10 for the baselines), the same Ifeelgoods sandbox (its own
process: one gunicorn gthread worker) and the same worker settings
(``celery … worker -c 2 -P prefork``):

* ours: the edge (``webhooks:create_app()``) under ``gunicorn -w 2 -k gthread --threads 8``,
  the relay process (``python -m rewardrelay.cli relay``), ``celery -A worker.app worker``;
  latency ends at the unit's ledger ``fulfilled_at``;
* naive: ``bench/e2e/naive.py``: a Flask view calling ``task.delay(body)`` (same gunicorn
  settings) and a task making one plain httpx create-and-redeem POST;
* no-op: N Celery no-op tasks published from here, timed until all ran (Redis INCR).

Phases: a warm-up, then a burst of ``--events`` events sent by ``--concurrency`` closed-
loop senders (throughput = events / (last completion − first send)), then a paced run of
``--latency-events`` at a fixed rate (default half the slower pipeline's burst rate, the
same for both) for latency without queueing. Latency = completion time − the moment the
signed webhook was first sent (one clock: this machine's wall clock).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    IFG_KEY,
    IFG_SECRET,
    KOMBU_PATTERNS,
    ROOT,
    Child,
    delete_matching,
    internal_event,
    percentile,
    pipeline_env,
    send_events,
    start_celery,
    start_gunicorn,
    start_sandbox,
    spawn,
    wait_log,
)

OURS_DB, BASE_DB = 9, 10
RESULTS = ROOT / "bench" / "results"


@dataclass
class Run:
    pipeline: str
    phase: str
    events: int
    seconds: float
    completed: int
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    non_2xx: int = 0

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "phase": self.phase,
            "events": self.events,
            "completed": self.completed,
            "failed": self.failed,
            "non_2xx": self.non_2xx,
            "seconds": round(self.seconds, 2),
            "per_s": round(self.rate, 1),
            "p50_ms": round(percentile(self.latencies_ms, 0.50), 1),
            "p99_ms": round(percentile(self.latencies_ms, 0.99), 1),
        }


class Pipeline:
    name: str
    url: str

    def completions(self, event_ids: Sequence[str], timeout: float) -> tuple[dict[str, float], int]:
        raise NotImplementedError

    def measure(
        self, phase: str, count: int, concurrency: int, rate: float = 0.0
    ) -> Run:
        events = [internal_event() for _ in range(count)]
        sent = send_events(self.url + "/events", events, concurrency=concurrency, rate=rate)
        ids = [event_id for event_id, _ in events]
        done, failed = self.completions(ids, timeout=120 + count / 5)
        first = min(sent.sent_at.values())
        last = max(done.values()) if done else time.time()
        latencies = [(done[i] - sent.sent_at[i]) * 1000 for i in ids if i in done]
        non_2xx = sum(n for s, n in sent.statuses.items() if not 200 <= s < 300) + sent.errors
        return Run(self.name, phase, count, last - first, len(done), latencies, failed, non_2xx)


class Ours(Pipeline):
    name = "ours"

    def __init__(self, host: str, port: int, sandbox: str, log_dir: Path, run_id: str) -> None:
        self.prefix = f"rrbench-{run_id}"
        self.redis = redis.Redis(host=host, port=port, db=OURS_DB)
        env = pipeline_env(f"redis://{host}:{port}/{OURS_DB}", self.prefix, sandbox)
        self.children: list[Child] = []
        edge, self.url = start_gunicorn("ours-edge", "webhooks:create_app()", env, log_dir)
        self.children.append(edge)
        relay = spawn("ours-relay", [sys.executable, "-m", "rewardrelay.cli", "relay"], env, log_dir)
        self.children.append(relay)
        wait_log(relay, b"relay started")
        self.children.append(start_celery("ours-worker", "worker.app", env, log_dir))

    def completions(self, event_ids: Sequence[str], timeout: float) -> tuple[dict[str, float], int]:
        pending = {f"{self.prefix}:unit:{eid}:0:0": eid for eid in event_ids}
        done: dict[str, float] = {}
        failed = 0
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            keys = list(pending)
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, "state", "fulfilled_at")
            for key, (state, fulfilled_at) in zip(keys, pipe.execute(), strict=True):
                if fulfilled_at is not None:
                    done[pending.pop(key)] = float(fulfilled_at)
                elif state in (b"dead_lettered", b"unroutable", b"ignored"):
                    pending.pop(key)
                    failed += 1
            if pending:
                time.sleep(0.1)
        return done, failed + len(pending)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def cleanup(self) -> int:
        return delete_matching(
            self.redis, [f"{self.prefix}:*", "celery", "celery\x06*", *KOMBU_PATTERNS]
        )


class Naive(Pipeline):
    name = "naive"

    def __init__(self, host: str, port: int, sandbox: str, log_dir: Path, run_id: str) -> None:
        self.run_id = run_id
        self.queue = f"bench-e2e-naive-{run_id}"
        self.redis = redis.Redis(host=host, port=port, db=BASE_DB)
        self.env = {
            **os.environ,
            "BENCH_BROKER_URL": f"redis://{host}:{port}/{BASE_DB}",
            "BENCH_QUEUE": self.queue,
            "BENCH_RUN": run_id,
            "BENCH_SANDBOX_URL": sandbox,
            "IFEELGOODS_API_KEY": IFG_KEY,
            "IFEELGOODS_API_SECRET": IFG_SECRET,
            "PYTHONPATH": str(ROOT),
        }
        self.children: list[Child] = []
        edge, self.url = start_gunicorn(
            "naive-edge", "bench.e2e.naive:create_app()", self.env, log_dir
        )
        self.children.append(edge)
        self.children.append(start_celery("naive-worker", "bench.e2e.naive", self.env, log_dir))

    def completions(self, event_ids: Sequence[str], timeout: float) -> tuple[dict[str, float], int]:
        from bench.e2e.naive import done_key

        key = done_key(self.run_id)
        deadline = time.monotonic() + timeout
        wanted = set(event_ids)
        done: dict[str, float] = {}
        while time.monotonic() < deadline:
            raw = self.redis.hmget(key, event_ids)
            done = {i: float(v) for i, v in zip(event_ids, raw, strict=True) if v is not None}
            if len(done) == len(wanted):
                break
            time.sleep(0.1)
        return done, len(wanted) - len(done)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def cleanup(self) -> int:
        return delete_matching(
            self.redis,
            [f"bench-e2e:{self.run_id}:*", f"bench-e2e-*-{self.run_id}*",
             f"_kombu.binding.*{self.run_id}*", "unacked", "unacked_index", "unacked_mutex"],
        )  # fmt: skip


def noop_baseline(
    host: str, port: int, log_dir: Path, run_id: str, count: int
) -> tuple[Run, Callable[[], int]]:
    queue = f"bench-e2e-noop-{run_id}"
    env = {
        **os.environ,
        "BENCH_BROKER_URL": f"redis://{host}:{port}/{BASE_DB}",
        "BENCH_QUEUE": queue,
        "BENCH_RUN": run_id,
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update({k: env[k] for k in ("BENCH_BROKER_URL", "BENCH_QUEUE", "BENCH_RUN")})
    from bench.e2e import naive

    worker = start_celery("noop-worker", "bench.e2e.naive", env, log_dir, queues=queue)
    client = redis.Redis(host=host, port=port, db=BASE_DB)
    try:
        def publish_and_wait(n: int) -> float:
            target = int(client.get(naive.count_key(run_id)) or 0) + n
            began = time.time()
            with naive.celery.producer_or_acquire() as producer:
                for _ in range(n):
                    naive.noop.apply_async(queue=queue, producer=producer)
            deadline = time.monotonic() + 60 + n / 20
            while int(client.get(naive.count_key(run_id)) or 0) < target:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            return time.time() - began

        publish_and_wait(50)  # warm-up
        seconds = publish_and_wait(count)
        executed = int(client.get(naive.count_key(run_id)) or 0) - 50
    finally:
        worker.stop()

    def cleanup() -> int:
        return delete_matching(client, [queue, f"{queue}\x06*", f"_kombu.binding.*{queue}*"])

    return Run("no-op", "burst", count, seconds, min(executed, count)), cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="events in the burst phase")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop senders")
    parser.add_argument("--latency-events", type=int, default=400, help="events, paced phase")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="paced rate (events/s); default: half the slower burst rate")
    parser.add_argument("--noop-events", type=int, default=0, help="default: 2 × --events")
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)

    run_id = uuid.uuid4().hex[:8]
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-e2e-{run_id}-"))
    host, port = args.redis_host, args.redis_port
    print(f"bench.e2e run {run_id}: {os.cpu_count()} CPUs, Redis {host}:{port} db {OURS_DB} "
          f"(ours) / {BASE_DB} (baselines); logs in {log_dir}", flush=True)
    runs: list[Run] = []
    cleanups: list[Callable[[], int]] = []
    pipelines: list[Any] = []
    sandbox: Child | None = None
    began = time.time()
    try:
        noop, noop_cleanup = noop_baseline(
            host, port, log_dir, run_id, args.noop_events or 2 * args.events
        )
        cleanups.append(noop_cleanup)
        runs.append(noop)
        print(f"  {noop.row()}", flush=True)

        sandbox, sandbox_url = start_sandbox(log_dir)
        naive = Naive(host, port, sandbox_url, log_dir, run_id)
        pipelines.append(naive)
        cleanups.append(naive.cleanup)
        ours = Ours(host, port, sandbox_url, log_dir, run_id)
        pipelines.append(ours)
        cleanups.append(ours.cleanup)

        for pipeline in (naive, ours):
            pipeline.measure("warm-up", 100, args.concurrency)
            runs.append(pipeline.measure("burst", args.events, args.concurrency))
            print(f"  {runs[-1].row()}", flush=True)
        bursts = {r.pipeline: r for r in runs if r.phase == "burst"}
        rate = args.rate or round(0.5 * min(bursts["naive"].rate, bursts["ours"].rate), 1)
        for pipeline in (naive, ours):
            runs.append(
                pipeline.measure(f"paced {rate:g}/s", args.latency_events, args.concurrency, rate)
            )
            print(f"  {runs[-1].row()}", flush=True)
        issued = _check_once(sandbox_url, ours)
    finally:
        for pipeline in pipelines:
            pipeline.stop()
        if sandbox is not None:
            sandbox.stop()
        deleted = 0
        for cleanup in cleanups:
            try:
                deleted += cleanup()
            except redis.RedisError as exc:
                print(f"cleanup failed: {exc}", file=sys.stderr)
        if not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)

    print()
    header = f"{'pipeline':9} {'phase':14} {'events':>6} {'done':>6} {'failed':>6} " \
             f"{'seconds':>8} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    for r in runs:
        row = r.row()
        print(f"{row['pipeline']:9} {row['phase']:14} {row['events']:>6} {row['completed']:>6} "
              f"{row['failed']:>6} {row['seconds']:>8} {row['per_s']:>9} {row['p50_ms']:>8} "
              f"{row['p99_ms']:>8}")
    ours_burst, naive_burst = bursts["ours"], bursts["naive"]
    ratio = ours_burst.rate / naive_burst.rate if naive_burst.rate else float("nan")
    print(f"\nthroughput ours/naive: {ratio:.2f} (target >= 0.8); "
          f"ours/no-op: {ours_burst.rate / noop.rate:.2f}; naive/no-op: "
          f"{naive_burst.rate / noop.rate:.2f}")
    print(f"sandbox orders per unit key (ours): {issued}")
    print(f"total {time.time() - began:.0f} s; cleaned up {deleted} Redis keys")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"e2e-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": [r.row() for r in runs],
                               "ratio_ours_naive": ratio}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


def _check_once(sandbox_url: str, ours: Ours) -> dict[int, int]:
    """Histogram of sandbox orders per idempotency key of our units: {1: n} is exactly once."""
    from sandboxes import SandboxControl

    with SandboxControl(sandbox_url) as control:
        issued: dict[str, int] = control.counters()["issued"]
    histogram: dict[int, int] = {}
    for key, n in issued.items():
        if key.startswith("evt_"):
            histogram[n] = histogram.get(n, 0) + 1
    return histogram


if __name__ == "__main__":
    threading.current_thread().name = "bench-e2e"
    raise SystemExit(main())
