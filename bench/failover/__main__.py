"""``python -m bench.failover``: a Sentinel failover under load, with and without WAIT.

For each mode (``STORE_WAIT_REPLICAS`` 0, then 1) a fresh deployment runs on loopback: a
Redis primary, a replica and three sentinels (bench/failover/cluster.py) holding both the
store (db 0) and the Celery broker (db 1), reached only through ``redis+sentinel://``; the
edge under gunicorn, the relay, a Celery worker and the Ifeelgoods sandbox. Then:

1. cost (one deployment, before the failover runs): two edges on the same store, one
   with ``STORE_WAIT_REPLICAS=0`` and one with 1, take ``--rounds`` alternating bursts of
   ``--burst`` signed events from ``--concurrency`` closed-loop senders (the edge alone: no
   relay or worker competes for the CPU); WAIT's cost is the median over rounds of each
   round's ratio (throughput, p50 and p99 accept latency), so drift in the machine's load
   hits both;
2. failover: ``--events`` signed events at ``--rate`` per second; after ``--failover-at``
   seconds an operator's ``SENTINEL FAILOVER``. Senders act like webhook senders: a non-2xx
   answer or a broken connection is retried (up to 30 times, 0.2 s apart). After the load,
   the run waits until the sentinels have demoted the old primary and every unit of an
   accepted event is terminal (or ``--settle`` seconds pass), then counts:

   * lost: events answered 2xx whose event is not in the store now;
   * issued twice: sandbox orders per unit key above one (must be 0);
   * unfinished: units of stored events not terminal after the settle time.

"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    SECRET,
    Child,
    internal_event,
    percentile,
    pipeline_env,
    spawn,
    start_celery,
    start_gunicorn,
    start_sandbox,
    wait_log,
)
from bench.failover.cluster import SentinelCluster
from worker.redis_connect import redis_client
from worker.signing import signed_headers
from worker.stores.codec import text
from worker.stores.keys import Keys

TERMINAL = {"fulfilled", "dead_lettered", "unroutable", "ignored"}
SEND_TRIES, SEND_PAUSE = 30, 0.2


@dataclass
class Sent:
    status: int = 0  # the final answer; -1: never answered
    answers: list[int] = field(default_factory=list)
    latency: float = 0.0  # first send → final 2xx answer


def send(
    url: str, events: Sequence[tuple[str, bytes]], *, concurrency: int, rate: float = 0.0
) -> dict[str, Sent]:
    """Post every event until a 2xx answer (or SEND_TRIES), closed loop or at ``rate``/s."""
    out: dict[str, Sent] = {}
    lock = threading.Lock()
    cursor = iter(range(len(events)))
    start = time.monotonic()

    def sender() -> None:
        with httpx.Client(timeout=5.0) as client:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                if rate:
                    time.sleep(max(0.0, start + index / rate - time.monotonic()))
                event_id, raw = events[index]
                record, first = Sent(), time.monotonic()
                for _ in range(SEND_TRIES):
                    try:
                        answer = client.post(
                            url, content=raw, headers=signed_headers(raw, SECRET, event_id)
                        )
                        record.answers.append(answer.status_code)
                    except httpx.HTTPError:
                        record.answers.append(-1)
                    if 200 <= record.answers[-1] < 300:
                        break
                    time.sleep(SEND_PAUSE)
                record.status = record.answers[-1]
                record.latency = time.monotonic() - first
                with lock:
                    out[event_id] = record

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


@dataclass
class ModeResult:
    wait_replicas: int
    events: int
    accepted: int
    answered_503: int
    lost: int
    issued_twice: int
    unfinished: int
    failover_seconds: float
    unfinished_states: dict[str, int] = field(default_factory=dict)


def run_mode(args: argparse.Namespace, wait_replicas: int, work: Path) -> ModeResult:
    children: list[Child] = []
    cluster = SentinelCluster(work / "redis").start()
    try:
        sandbox, sandbox_url = start_sandbox(work / "logs")
        children.append(sandbox)
        prefix = f"rrfo{wait_replicas}"
        env = pipeline_env(
            cluster.url(0),
            prefix,
            sandbox_url,
            CELERY_BROKER_URL=cluster.url(1),
            TASK_QUEUE=f"{prefix}-tasks",
            STORE_WAIT_REPLICAS=str(wait_replicas),
            STORE_WAIT_TIMEOUT_MS=str(args.wait_timeout_ms),
            UNIT_STALE_SECONDS="5",
            TASK_LEASE_SECONDS="10",
            SWEEP_INTERVAL_SECONDS="1",
            RETRY_BASE_SECONDS="0.2",
            RETRY_MAX_DELAY_SECONDS="2",
        )
        edge, base = start_gunicorn("edge", "webhooks:create_app()", env, work / "logs")
        children.append(edge)
        url = base + "/events"

        relay = spawn(
            "relay", [sys.executable, "-m", "rewardrelay.cli", "relay"], env, work / "logs"
        )
        children.append(relay)
        wait_log(relay, b"relay started")
        children.append(start_celery("worker", "worker.app", env, work / "logs", concurrency=4))

        load = [internal_event() for _ in range(args.events)]
        timer: dict[str, float] = {}

        def fail_over() -> None:
            time.sleep(args.failover_at)
            begun = time.monotonic()
            timer["old"], timer["new"] = cluster.failover(wait_demoted=False)
            timer["seconds"] = time.monotonic() - begun

        switch = threading.Thread(target=fail_over)
        switch.start()
        answers = send(url, load, concurrency=args.concurrency, rate=args.rate)
        switch.join()
        counts = settle(cluster, Keys(prefix), answers, sandbox_url, args.settle)
        return ModeResult(
            wait_replicas=wait_replicas,
            events=len(load),
            accepted=sum(1 for s in answers.values() if 200 <= s.status < 300),
            answered_503=sum(s.answers.count(503) for s in answers.values()),
            failover_seconds=timer.get("seconds", float("nan")),
            **counts,
        )
    finally:
        for child in reversed(children):
            child.stop()
        cluster.stop()


@dataclass
class Burst:
    wait_replicas: int
    events_per_s: float
    p50_ms: float
    p99_ms: float


def measure_cost(args: argparse.Namespace, work: Path) -> list[tuple[Burst, Burst]]:
    """Paired bursts against an edge without and one with WAIT, on one deployment."""
    children: list[Child] = []
    cluster = SentinelCluster(work / "redis").start()
    try:
        urls = {}
        for wait_replicas in (0, 1):
            env = pipeline_env(
                cluster.url(0),
                f"rrcost{wait_replicas}",
                "http://127.0.0.1:9",  # no worker runs: the provider is never called
                CELERY_BROKER_URL=cluster.url(1),
                STORE_WAIT_REPLICAS=str(wait_replicas),
                STORE_WAIT_TIMEOUT_MS=str(args.wait_timeout_ms),
            )
            edge, base = start_gunicorn(f"edge{wait_replicas}", "webhooks:create_app()", env, work)
            children.append(edge)
            urls[wait_replicas] = base + "/events"
        send(urls[0], [internal_event() for _ in range(50)], concurrency=4)  # warm-up
        send(urls[1], [internal_event() for _ in range(50)], concurrency=4)
        rounds: list[tuple[Burst, Burst]] = []
        for round_no in range(args.rounds):
            order = (0, 1) if round_no % 2 == 0 else (1, 0)
            measured = {w: burst(urls[w], w, args) for w in order}
            rounds.append((measured[0], measured[1]))
        return rounds
    finally:
        for child in reversed(children):
            child.stop()
        cluster.stop()


def burst(url: str, wait_replicas: int, args: argparse.Namespace) -> Burst:
    events = [internal_event() for _ in range(args.burst)]
    started = time.monotonic()
    answers = send(url, events, concurrency=args.concurrency)
    seconds = time.monotonic() - started
    latencies = [s.latency * 1000 for s in answers.values() if 200 <= s.status < 300]
    return Burst(
        wait_replicas,
        len(latencies) / seconds,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
    )


def drain(cluster: SentinelCluster, keys: Keys, limit: float) -> None:
    """Wait until no unit is live (every one terminal), at most ``limit`` seconds."""
    store = redis_client(cluster.url(0), socket_timeout=5)
    deadline = time.monotonic() + limit
    while store.zcard(keys.live) and time.monotonic() < deadline:
        time.sleep(0.5)
    store.close()


def settle(
    cluster: SentinelCluster, keys: Keys, answers: dict[str, Sent], sandbox_url: str, limit: float
) -> dict[str, Any]:
    """Wait for the old primary's demotion and the units, then count what was lost."""
    deadline = time.monotonic() + limit
    old = [n for n in ("primary", "replica") if cluster.ports[n] != cluster.primary_port()][0]
    while time.monotonic() < deadline and cluster._role(cluster.ports[old]) != "slave":
        time.sleep(0.2)
    store = redis_client(cluster.url(0), socket_timeout=5)
    accepted = [e for e, s in answers.items() if 200 <= s.status < 300]
    unfinished: dict[str, str] = {}
    while True:
        stored = [e for e in accepted if store.exists(keys.event(e))]
        unfinished = {}
        for event_id in stored:
            raw = store.hget(keys.event(event_id), "units")
            for unit_id in json.loads(raw or b"[]"):
                state = store.hget(keys.unit(unit_id), "state")
                if state is None or text(state) not in TERMINAL:
                    unfinished[unit_id] = "missing" if state is None else text(state)
        if not unfinished or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    issued: dict[str, int] = httpx.get(f"{sandbox_url}/_sandbox/counters").json()["issued"]
    return {
        "lost": len(accepted) - len(stored),
        "issued_twice": sum(1 for key, n in issued.items() if key.startswith("evt_") and n > 1),
        "unfinished": len(unfinished),
        "unfinished_states": dict(Counter(unfinished.values())),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--events", type=int, default=1500, help="events in the failover load")
    parser.add_argument("--rate", type=float, default=150.0, help="events per second sent")
    parser.add_argument("--failover-at", type=float, default=3.0, help="seconds into the load")
    parser.add_argument("--burst", type=int, default=400, help="events per cost burst")
    parser.add_argument("--rounds", type=int, default=6, help="paired cost bursts")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--wait-timeout-ms", type=int, default=200)
    parser.add_argument("--settle", type=float, default=90.0, help="seconds to wait after")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--keep", type=Path, help="keep logs and Redis files in this directory (default: none)"
    )
    args = parser.parse_args(argv)
    results: list[ModeResult] = []
    with tempfile.TemporaryDirectory(prefix="rr-failover-") as tmp:
        work = args.keep or Path(tmp)
        rounds = measure_cost(args, work / "cost")
        for wait_replicas in (0, 1):
            results.append(run_mode(args, wait_replicas, work / f"wait{wait_replicas}"))
    print("cost, paired bursts (no WAIT | WAIT): events/s, p50 ms, p99 ms")
    for plain_burst, wait_burst in rounds:
        print(
            f"  {plain_burst.events_per_s:6.0f} {plain_burst.p50_ms:6.1f} {plain_burst.p99_ms:6.1f}"
            f" | {wait_burst.events_per_s:6.0f} {wait_burst.p50_ms:6.1f} {wait_burst.p99_ms:6.1f}"
        )
    ratios = {
        name: statistics.median(getattr(w, name) / getattr(p, name) for p, w in rounds)
        for name in ("events_per_s", "p50_ms", "p99_ms")
    }
    print(
        "WAIT / no WAIT, median of rounds: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
    )
    print(
        f"{'WAIT':>4} {'events':>6} {'2xx':>5} {'503s':>5} {'lost':>5} {'twice':>5} "
        f"{'unfinished':>10} {'failover s':>10}"
    )
    for r in results:
        print(
            f"{r.wait_replicas:>4} {r.events:>6} {r.accepted:>5} {r.answered_503:>5} "
            f"{r.lost:>5} {r.issued_twice:>5} {r.unfinished:>10} {r.failover_seconds:>10.2f}"
            + (f"  unfinished by state: {r.unfinished_states}" if r.unfinished else "")
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cost_rounds": [[p.__dict__, w.__dict__] for p, w in rounds],
                    "ratios": ratios,
                    "failover": [r.__dict__ for r in results],
                },
                indent=2,
            )
        )
    return 1 if any(r.issued_twice for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
