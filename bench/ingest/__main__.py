"""``python -m bench.ingest``: our edge vs a naive ``task.delay`` view and a minimal receiver.

The minimal receiver (``bench/ingest/minimal_app.py``) verifies the signature and makes one
pipelined ``SET NX`` + ``XADD`` round trip: the floor a careful hand-written edge reaches.
Two ratios are printed: ours/naive and ours/minimal.

All apps run under ``gunicorn -w WORKERS -k gthread --threads THREADS --reuse-port`` on a
free loopback port, against the local Redis (127.0.0.1:6379): ours in db 12 under a unique key
prefix, the naive one publishing to a unique queue in db 13. Both stay up while
rounds alternate between them, each round a closed-loop throughput run and a fixed-rate
run per target; the ratio printed is the median of the per-round ratios, so noise from
other work on the machine falls on both sides. ``--reuse-port`` gives each gunicorn worker
its own listening socket, among which the kernel spreads new connections evenly: with one
shared socket, whichever worker is awake takes a burst of new keep-alive connections (seen:
29 of 32), and the other idles for the whole run, which halved a run's throughput at
random, on either side. Each run also records the CPU the
server's gunicorn tree and Redis spent per request (``/proc`` and ``INFO cpu``), which
varies less than a rate. Load comes from ``bench.ingest.load`` (asyncio, kept-alive
connections, requests signed before the clock starts). Keys are deleted afterwards; the
apps' logs and a JSON copy of the table go to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.common import tree_cpu_seconds
from bench.ingest.load import LoadResult, run_load

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SECRET = "whsec_YmVuY2gtc2VjcmV0LWZvci10aGUtaW5nZXN0LWJlbmNo"
OURS_DB, NAIVE_DB = 12, 13


@dataclass
class Target:
    name: str
    app: str
    db: int
    env: dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(target: Target, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "-w", str(args.workers), "-k", args.worker_class, "--threads", str(args.threads),
        "--reuse-port",
        "-b", f"127.0.0.1:{port}", "--log-level", "warning", target.app,
    ]  # fmt: skip
    env = {**os.environ, **target.env}
    # The app's log lines go to a file, as a deployment's go to its log collector.
    RESULTS.mkdir(exist_ok=True)
    log = (RESULTS / f"ingest-{target.name}.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{target.name}: gunicorn exited with {process.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{target.name}: gunicorn did not answer on {base}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cleanup(host: str, port: int, prefix: str, queue: str, minimal_prefix: str) -> int:
    deleted = 0
    ours = redis.Redis(host=host, port=port, db=OURS_DB)
    for key in ours.scan_iter(match=f"{prefix}:*", count=1000):
        deleted += int(ours.delete(key))
    naive = redis.Redis(host=host, port=port, db=NAIVE_DB)
    for pattern in (queue, f"{queue}\x06*", f"_kombu.binding*.{queue}", f"{minimal_prefix}:*"):
        for key in naive.scan_iter(match=pattern, count=1000):
            deleted += int(naive.delete(key))
    return deleted


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def row(name: str, mode: str, result: LoadResult, cpu: tuple[float, float]) -> dict[str, object]:
    """One run's figures; ``cpu`` is (gunicorn, Redis) CPU seconds spent during it."""
    sent = result.accepted + sum(result.other.values()) + result.errors
    answered = max(1, sent - result.errors)
    return {
        "target": name,
        "mode": mode,
        "sent": sent,
        "accepted_per_s": round(result.rate, 1),
        "p50_ms": round(result.percentile(0.50), 2),
        "p99_ms": round(result.percentile(0.99), 2),
        "non_202": dict(result.other),
        "errors": result.errors,
        "web_cpu_ms": round(cpu[0] / answered * 1000, 3),
        "redis_cpu_ms": round(cpu[1] / answered * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--rate", type=float, default=300.0, help="fixed-rate events/s")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    parser.add_argument(
        "--worker-class",
        default="gthread",
        help="gunicorn worker class for every target (webhooks.edge_worker.EdgeWorker: ours)",
    )
    parser.add_argument("--load-processes", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32, help="per load process")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per target")
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    args = parser.parse_args(argv)

    run_id = uuid.uuid4().hex[:8]
    prefix, queue = f"rrbench-{run_id}", f"bench-naive-{run_id}"
    minimal_prefix = f"bench-minimal-{run_id}"
    redis_base = f"redis://{args.redis_host}:{args.redis_port}"
    targets = [
        Target(
            "ours",
            "webhooks:create_app()",
            OURS_DB,
            {
                "REDIS_URL": f"{redis_base}/{OURS_DB}",
                "RR_KEY_PREFIX": prefix,
                "EVENT_SECRETS": SECRET,
                "CONIQ_WEBHOOK_SECRETS": SECRET,
                "ADMIN_TOKEN": "bench-admin-token-0123456789",
                "LOG_FORMAT": "text",
            },
        ),
        Target(
            "naive",
            "bench.ingest.naive_app:create_app()",
            NAIVE_DB,
            {"BENCH_BROKER_URL": f"{redis_base}/{NAIVE_DB}", "BENCH_QUEUE": queue},
        ),
        Target(
            "minimal",
            "bench.ingest.minimal_app:create_app()",
            NAIVE_DB,
            {
                "BENCH_REDIS_URL": f"{redis_base}/{NAIVE_DB}",
                "BENCH_PREFIX": minimal_prefix,
                "BENCH_SECRET": SECRET,
            },
        ),
    ]
    rows: list[dict[str, object]] = []
    print(
        f"gunicorn -w {args.workers} -k {args.worker_class} --threads {args.threads} --reuse-port; "
        f"load "
        f"{args.load_processes}x{args.connections} keep-alive connections; "
        f"{args.duration:g} s per run; "
        f"{args.rounds} rounds, targets alternating; {os.cpu_count()} CPUs"
    )
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    monitor = redis.Redis(host=args.redis_host, port=args.redis_port)
    try:
        for target in targets:
            servers[target.name] = start_gunicorn(target, args)
            url = servers[target.name][1] + "/events"
            run_load(url, SECRET, duration=1.0, connections=4)  # warm-up
        # Rounds alternate the order of the targets, so a burst of load from something
        # else on the machine lands on both sides rather than on one.
        for round_no in range(1, args.rounds + 1):
            order = targets if round_no % 2 else targets[::-1]
            for mode, rate in (("max", 0.0), (f"{args.rate:g}/s", args.rate)):
                for target in order:
                    process, _ = servers[target.name]
                    web0, redis0 = tree_cpu_seconds(process.pid), redis_cpu_seconds(monitor)
                    result = run_load(
                        servers[target.name][1] + "/events",
                        SECRET,
                        duration=args.duration,
                        connections=args.connections,
                        processes=args.load_processes,
                        rate=rate,
                    )
                    cpu = (
                        tree_cpu_seconds(process.pid) - web0,
                        redis_cpu_seconds(monitor) - redis0,
                    )
                    rows.append({**row(target.name, mode, result, cpu), "round": round_no})
                    print(f"  round {round_no} {target.name:5} {mode:>6}: {rows[-1]}")
    finally:
        for process, _ in servers.values():
            stop(process)
        deleted = cleanup(args.redis_host, args.redis_port, prefix, queue, minimal_prefix)
    print()
    print(
        f"{'round':>5} {'target':6} {'mode':>7} {'sent':>7} {'accepted/s':>11} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'non-202':>8} {'errors':>6} {'web cpu ms':>10} {'redis cpu ms':>12}"
    )
    for r in rows:
        print(
            f"{r['round']!s:>5} {r['target']!s:6} {r['mode']!s:>7} {r['sent']!s:>7} "
            f"{r['accepted_per_s']!s:>11} {r['p50_ms']!s:>8} {r['p99_ms']!s:>8} "
            f"{sum(r['non_202'].values())!s:>8} {r['errors']!s:>6} "  # type: ignore[attr-defined]
            f"{r['web_cpu_ms']!s:>10} {r['redis_cpu_ms']!s:>12}"
        )
    ratios, minimal_ratios = [], []
    for round_no in range(1, args.rounds + 1):
        by = {(r["target"], r["mode"]): float(r["accepted_per_s"])  # type: ignore[arg-type]
              for r in rows if r["round"] == round_no and r["mode"] == "max"}  # fmt: skip
        ratios.append(by[("ours", "max")] / (by[("naive", "max")] or math.nan))
        minimal_ratios.append(by[("ours", "max")] / (by[("minimal", "max")] or math.nan))
    ratio = statistics.median(ratios)
    minimal_ratio = statistics.median(minimal_ratios)
    rate_mode = f"{args.rate:g}/s"
    p99 = {
        name: statistics.median(
            float(r["p99_ms"])  # type: ignore[arg-type]
            for r in rows
            if r["target"] == name and r["mode"] == rate_mode
        )
        for name in ("ours", "naive", "minimal")
    }
    print(
        f"\nthroughput ratio ours/naive per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
        f"median {ratio:.2f}"
    )
    print(
        "throughput ratio ours/minimal per round: "
        f"{', '.join(f'{x:.2f}' for x in minimal_ratios)}; median {minimal_ratio:.2f} "
        f"(target >= 0.90: {'PASS' if minimal_ratio >= 0.9 else 'FAIL'})"
    )
    # CPU per answered request in the closed-loop runs: what each edge costs the machine,
    # less sensitive to the neighbours' load than a rate.
    cpu_per_request = {
        name: {
            part: statistics.median(
                float(r[f"{part}_cpu_ms"])  # type: ignore[arg-type]
                for r in rows
                if r["target"] == name and r["mode"] == "max"
            )
            for part in ("web", "redis")
        }
        for name in ("ours", "naive", "minimal")
    }
    print(
        f"median p99 at {rate_mode}: ours {p99['ours']:.1f} ms, naive {p99['naive']:.1f} ms, "
        f"minimal {p99['minimal']:.1f} ms"
        f"   (cleaned up {deleted} Redis keys)"
    )
    print(
        "median CPU per request (web + Redis): "
        + ", ".join(
            f"{name} {c['web']:.3f} + {c['redis']:.3f} ms" for name, c in cpu_per_request.items()
        )
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ingest-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "rows": rows,
                "ratios": ratios,
                "ratio": ratio,
                "minimal_ratios": minimal_ratios,
                "ratio_ours_minimal": minimal_ratio,
                "load_average": os.getloadavg(),
                "p99": p99,
                "cpu_per_request_ms": cpu_per_request,
            },
            indent=2,
        )
    )
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
