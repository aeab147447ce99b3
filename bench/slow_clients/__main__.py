"""``python -m bench.slow_clients``: 64 stalled connections, then signed webhooks and probes.

Starts the receiver as production does (``gunicorn -c gunicorn.conf.py``, 2 processes of
8 threads) on a free loopback port, against the local Redis (db 12, a unique key prefix,
deleted afterwards), and runs ``bench.slow_clients.measure``. ``--worker-class gthread``
runs gunicorn's own threaded worker instead of ours (the "before").

    python -m bench.slow_clients                         # EdgeWorker (gunicorn.conf.py)
    python -m bench.slow_clients --worker-class gthread  # gunicorn's gthread, for comparison
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

from bench.common import free_port
from bench.slow_clients import measure

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SECRET = "whsec_YmVuY2gtc2VjcmV0LWZvci1zbG93LWNsaWVudHM="
DB = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_clients")
    parser.add_argument("--slow", type=int, default=64, help="stalled connections to hold")
    parser.add_argument("--webhooks", type=int, default=300)
    parser.add_argument("--worker-class", default="", help="override gunicorn.conf.py's")
    parser.add_argument("--redis-url", default=f"redis://127.0.0.1:6379/{DB}")
    args = parser.parse_args(argv)

    prefix = f"rrslow-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": args.redis_url,
        "RR_KEY_PREFIX": prefix,
        "EVENT_SECRETS": SECRET,
        "CONIQ_WEBHOOK_SECRETS": SECRET,
        "ADMIN_TOKEN": "bench-admin-token-0123456789",
    }
    command = [
        sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
        "-b", f"127.0.0.1:{port}", "--log-level", "warning",
    ]  # fmt: skip
    if args.worker_class:
        command += ["--worker-class", args.worker_class]
    RESULTS.mkdir(exist_ok=True)
    log = (RESULTS / "slow-clients-web.log").open("wb")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the receiver did not start (bench/results/slow-clients-web.log)")
            time.sleep(0.1)
        result = measure(url, SECRET, slow=args.slow, webhooks=args.webhooks)
        summary = {"worker_class": args.worker_class or "gunicorn.conf.py", **result.summary()}
        print(json.dumps(summary, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        store = redis.Redis.from_url(args.redis_url)
        for key in store.scan_iter(match=f"{prefix}:*", count=1000):
            store.delete(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
