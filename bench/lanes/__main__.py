"""Lane limiter benchmark: does a configured provider rate hold, with no provider 429?

    python -m bench.lanes [--rate 50] [--units 600] [--concurrency 4] [--workers 2]

The whole pipeline runs as real processes (private Redis, gunicorn edge, relay, Celery
workers, the Ifeelgoods sandbox as its own gunicorn process). The sandbox enforces the
same rate as a provider would ([DESIGN] ``quota`` fault: a token bucket answering 429
beyond ``--rate``), and the workers are configured with ``IFEELGOODS_RATE_PER_SECOND``
= ``--rate``. A backlog of ``--units`` rewards is sent at once; the rate is measured from
the ledger's ``fulfilled_at`` times (whole run and the steady middle 80 %), and the 429s
from the sandbox's counters. Target (issue 17): within 5 % of the rate, 0 provider 429s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.common import (
    PrivateRedis,
    internal_event,
    pipeline_env,
    send_events,
    spawn,
    start_celery,
    start_gunicorn,
    start_sandbox,
    wait_log,
)
from sandboxes import SandboxControl

PREFIX = "rrlanes"
POLL_SECONDS = 0.25


def _fulfilled_times(client: redis.Redis, event_ids: list[str], timeout: float) -> list[float]:
    pending = {f"{PREFIX}:unit:{eid}:0:0" for eid in event_ids}
    times: list[float] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        keys = list(pending)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "state", "fulfilled_at")
        for key, (state, fulfilled_at) in zip(keys, pipe.execute(), strict=True):
            if fulfilled_at is not None:
                times.append(float(fulfilled_at))
                pending.discard(key)
            elif state in (b"dead_lettered", b"unroutable"):
                pending.discard(key)
        if pending:
            time.sleep(POLL_SECONDS)
    return sorted(times)


def _rate(times: list[float]) -> float:
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lanes", description=__doc__)
    parser.add_argument("--rate", type=float, default=50.0, help="provider rate per second")
    parser.add_argument("--units", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=4, help="prefork processes/worker")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes")
    parser.add_argument("--burst", type=float, default=5.0, help="the sandbox bucket's size")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-lanes-"))
    store = PrivateRedis(work / "redis", fsync="off")
    children = []
    try:
        redis_url = store.start()
        sandbox, sandbox_url = start_sandbox(work / "logs")
        children.append(sandbox)
        with SandboxControl(sandbox_url) as control:
            control.set_faults({"kind": "quota", "per_second": args.rate, "burst": args.burst})
        env = pipeline_env(
            f"{redis_url}/0",
            PREFIX,
            sandbox_url,
            IFEELGOODS_RATE_PER_SECOND=str(args.rate),
            IFEELGOODS_MAX_IN_FLIGHT=str(args.concurrency * args.workers),
        )
        edge, url = start_gunicorn("edge", "webhooks:create_app()", env, work / "logs")
        children.append(edge)
        relay = spawn(
            "relay", [sys.executable, "-m", "rewardrelay.cli", "relay"], env, work / "logs"
        )
        children.append(relay)
        wait_log(relay, b"relay started")
        for n in range(args.workers):
            children.append(
                start_celery(
                    f"worker{n}", "worker.app", env, work / "logs", concurrency=args.concurrency
                )
            )
        events = [internal_event("GIFT10") for _ in range(args.units)]
        sent = send_events(f"{url}/events", events, concurrency=8)
        times = _fulfilled_times(
            redis.Redis.from_url(f"{redis_url}/0"),
            [event_id for event_id, _ in events],
            timeout=args.units / args.rate * 3 + 60,
        )
        with SandboxControl(sandbox_url) as control:
            counters = control.counters()
        cut = len(times) // 10
        middle = times[cut : len(times) - cut]
        whole, steady = _rate(times), _rate(middle)
        result = {
            "configured_rate": args.rate,
            "units": args.units,
            "fulfilled": len(times),
            "send_seconds": round(sent.finished - sent.started, 2),
            "measured_rate": round(whole, 2),
            "steady_rate_middle_80pct": round(steady, 2),
            "deviation_pct": round(100 * (whole - args.rate) / args.rate, 2),
            "steady_deviation_pct": round(100 * (steady - args.rate) / args.rate, 2),
            "provider_429s": int(counters.get("faults_injected", {}).get("rate_limit", 0)),
            "provider_requests": int(counters.get("requests", 0)),
        }
        print(json.dumps(result, indent=2))
        ok = (
            len(times) == args.units
            and result["provider_429s"] == 0
            and abs(result["deviation_pct"]) <= 5
        )
        print("PASS" if ok else "FAIL", "(target: within 5 % of the rate, 0 provider 429s)")
        return 0 if ok else 1
    finally:
        for child in reversed(children):
            child.stop()
        store.stop()


if __name__ == "__main__":
    sys.exit(main())
