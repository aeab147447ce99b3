"""``python -m bench.soak``: many events through the real pipeline; does memory stay flat?

The stack is the one ``bench.e2e`` measures: a private ``redis-server`` on a free port
(AOF ``everysec``), the Ifeelgoods sandbox in its own process, the edge under ``gunicorn
-w 2 -k gthread --threads 8``, the relay, and ``celery -A worker.app worker -c 2 -P
prefork``. Closed-loop senders post ``--events`` signed events (default 50,000), pausing
while more than ``--window`` units are unfinished (the ledger's live set), so the backlog
stays bounded and the run measures steady state rather than a growing queue.

The resident set size (``VmRSS`` from ``/proc/<pid>/status``) of every process of the
web (gunicorn master + workers) and worker (celery main + pool children) trees, and of
the relay for information, is sampled every ``--sample-every`` seconds. The first
``--warmup`` events are the warm-up; the baseline is the median of the first three
samples after it, the end value the median of the last three. Pass: web and worker each
grow by less than ``--limit`` percent (default 10). At the end every unit must be
fulfilled, and the sandbox must hold exactly one order per unit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    FSYNC_CHOICES,
    ROOT,
    Child,
    PrivateRedis,
    internal_event,
    pipeline_env,
    rss_kb,
    send_events,
    spawn,
    start_celery,
    start_gunicorn,
    start_sandbox,
    tree_pids,
    wait_log,
)

RESULTS = ROOT / "bench" / "results"
PREFIX = "rrsoak"
EDGE_NAME, WORKER_NAME, RELAY_NAME = "web", "worker", "relay"
JUDGED = (EDGE_NAME, WORKER_NAME)  # the processes the pass/fail line is about
BATCH = 500  # events per sending batch (between two backlog checks)


@dataclass
class Sample:
    at: float  # seconds since the start of sending
    sent: int
    done: int  # sent minus the units still unfinished
    rss_kb: dict[str, int]
    processes: dict[str, int]
    per_pid: dict[str, dict[int, int]]  # each process's own VmRSS (KiB), by tree


@dataclass
class Soak:
    store: redis.Redis
    children: dict[str, Child]
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    started: float = 0.0

    def backlog(self) -> int:
        """Units accepted and not yet in a terminal state."""
        return int(self.store.zcard(f"{PREFIX}:units:live"))

    def sample(self) -> Sample:
        rss: dict[str, int] = {}
        processes: dict[str, int] = {}
        per_pid: dict[str, dict[int, int]] = {}
        for name, child in self.children.items():
            per_pid[name] = {pid: rss_kb(pid) for pid in tree_pids(child.pid)}
            rss[name], processes[name] = sum(per_pid[name].values()), len(per_pid[name])
        done = self.sent - self.backlog()
        s = Sample(round(time.time() - self.started, 1), self.sent, done, rss, processes, per_pid)
        self.samples.append(s)
        return s


def _sampler(soak: Soak, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        s = soak.sample()
        line = "  ".join(f"{k} {v / 1024:7.1f} MiB" for k, v in s.rss_kb.items())
        print(f"  t={s.at:7.1f}s sent {s.sent:6d} done {s.done:6d}  {line}", flush=True)


def _median_rss(samples: list[Sample], name: str) -> float:
    return statistics.median(s.rss_kb[name] for s in samples)


def _verify(store: redis.Redis, event_ids: list[str]) -> dict[str, int]:
    """Count ledger states of every unit (one per event)."""
    states: dict[str, int] = {}
    for start in range(0, len(event_ids), 5000):
        pipe = store.pipeline(transaction=False)
        for eid in event_ids[start : start + 5000]:
            pipe.hget(f"{PREFIX}:unit:{eid}:0:0", "state")
        for state in pipe.execute():
            key = state.decode() if state else "missing"
            states[key] = states.get(key, 0) + 1
    return states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=50_000, help="events to send")
    parser.add_argument("--warmup", type=int, default=0, help="default: 10%% of --events")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop senders")
    parser.add_argument("--window", type=int, default=300, help="most unfinished units")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--limit", type=float, default=10.0, help="max RSS growth, percent")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="celery -c")
    parser.add_argument("--fsync", choices=FSYNC_CHOICES, default="everysec")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    warmup = args.warmup or max(1000, args.events // 10)
    if warmup >= args.events:
        parser.error("--warmup must be below --events")

    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"bench-soak-{run_id}-"))
    log_dir = work / "logs"
    private = PrivateRedis(work / "redis", fsync=args.fsync)
    children: list[Child] = []
    stop = threading.Event()
    began = time.time()
    event_ids: list[str] = []
    try:
        redis_url = private.start()
        print(
            f"bench.soak {run_id}: {args.events} events ({warmup} warm-up), {os.cpu_count()} "
            f"CPUs, private Redis {redis_url} (AOF {args.fsync}), celery -c "
            f"{args.worker_concurrency}, backlog window {args.window}; logs in {log_dir}",
            flush=True,
        )
        sandbox, sandbox_url = start_sandbox(log_dir)
        children.append(sandbox)
        env = pipeline_env(f"{redis_url}/0", PREFIX, sandbox_url)
        edge, url = start_gunicorn(EDGE_NAME, "webhooks:create_app()", env, log_dir)
        children.append(edge)
        relay = spawn(RELAY_NAME, [sys.executable, "-m", "rewardrelay.cli", "relay"], env,
                      log_dir)  # fmt: skip
        children.append(relay)
        wait_log(relay, b"relay started")
        worker = start_celery(
            WORKER_NAME, "worker.app", env, log_dir, concurrency=args.worker_concurrency
        )
        children.append(worker)
        store = redis.Redis.from_url(f"{redis_url}/0")
        soak = Soak(store, {EDGE_NAME: edge, WORKER_NAME: worker, RELAY_NAME: relay})
        soak.started = time.time()
        sampler = threading.Thread(
            target=_sampler, args=(soak, args.sample_every, stop), daemon=True
        )
        non_2xx = 0
        warm_at = 0.0
        while soak.sent < args.events:
            while soak.backlog() > args.window:
                time.sleep(0.05)
            n = min(BATCH, args.events - soak.sent)
            events = [internal_event() for _ in range(n)]
            result = send_events(url + "/events", events, concurrency=args.concurrency)
            non_2xx += n - sum(c for s, c in result.statuses.items() if 200 <= s < 300)
            event_ids += [eid for eid, _ in events]
            soak.sent += n
            if soak.sent >= warmup and not warm_at:
                warm_at = time.time() - soak.started
                print(f"  warm-up done after {soak.sent} events ({warm_at:.0f} s)", flush=True)
                soak.samples.clear()
                soak.sample()
                sampler.start()
            if any(not child.alive() for child in children):
                raise SystemExit("a process of the stack died; see the logs")
        deadline = time.monotonic() + 120
        while soak.backlog() and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        sampler.join()
        soak.sample()
        seconds = time.time() - soak.started
        states = _verify(store, event_ids)
        memory = store.info("memory")
        used = int(memory["used_memory"])
        from sandboxes import SandboxControl

        with SandboxControl(sandbox_url) as control:
            issued: dict[str, int] = control.counters()["issued"]
        per_key: dict[int, int] = {}
        for n in issued.values():
            per_key[n] = per_key.get(n, 0) + 1
    finally:
        stop.set()
        for child in reversed(children):
            child.stop()
        private.stop()
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    samples = soak.samples
    head, tail = samples[:3], samples[-3:]
    print(f"\n{len(samples)} RSS samples after warm-up (MiB, whole process trees):")
    print(f"{'t (s)':>8} {'sent':>7} " + " ".join(f"{k:>9}" for k in samples[0].rss_kb))
    for s in samples:
        print(f"{s.at:8.1f} {s.sent:7d} " + " ".join(f"{v / 1024:9.1f}" for v in s.rss_kb.values()))
    growth: dict[str, float] = {}
    for name in samples[0].rss_kb:
        first, last = _median_rss(head, name), _median_rss(tail, name)
        growth[name] = 100 * (last - first) / first
        judged = "" if name in JUDGED else " (not judged)"
        print(
            f"{name:7} {samples[0].processes[name]} processes: {first / 1024:.1f} -> "
            f"{last / 1024:.1f} MiB, growth {growth[name]:+.1f}%{judged}"
        )
    first_pids, last_pids = samples[0].per_pid, samples[-1].per_pid
    for name in first_pids:
        detail = ", ".join(
            f"{pid} {kb / 1024:.1f}->{last_pids[name].get(pid, 0) / 1024:.1f}"
            for pid, kb in first_pids[name].items()
        )
        print(f"  {name} by process (MiB, first -> last sample): {detail}")
    ok_memory = all(growth[name] < args.limit for name in JUDGED)
    ok_states = states == {"fulfilled": len(event_ids)} and non_2xx == 0
    ok_once = per_key == {1: len(event_ids)}
    rate = len(event_ids) / seconds
    print(
        f"\n{len(event_ids)} events in {seconds:.0f} s ({rate:.1f}/s); ledger states {states}; "
        f"non-2xx {non_2xx}; sandbox orders per key {per_key}"
    )
    print(
        f"Redis used_memory at the end: {used / 2**20:.1f} MiB "
        f"({used / len(event_ids) / 1024:.2f} KiB per event; nothing expires)"
    )
    verdict = "PASS" if ok_memory and ok_states and ok_once else "FAIL"
    print(
        f"{verdict}: web {growth[EDGE_NAME]:+.1f}%, worker {growth[WORKER_NAME]:+.1f}% RSS growth "
        f"after warm-up (limit {args.limit:g}%); all fulfilled: {ok_states}; exactly once: "
        f"{ok_once}"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%dT%H%M%S')}-{run_id}.json"
    payload: dict[str, Any] = {
        "args": vars(args),
        "samples": [s.__dict__ for s in samples],
        "growth_percent": growth,
        "states": states,
        "orders_per_key": per_key,
        "events_per_s": rate,
        "redis_used_memory": used,
        "verdict": verdict,
        "total_seconds": time.time() - began,
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
