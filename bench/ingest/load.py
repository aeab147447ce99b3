"""Load generation: processes × threads of httpx clients, each signing a fresh event.

Two modes:
* closed loop: every thread sends as fast as answers come back (throughput);
* fixed rate: requests are scheduled at a constant total rate and latency is measured
  from the *scheduled* send time, so a stalled server is not hidden by the generator
  waiting for it (no coordinated omission).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import httpx

from webhooks.signatures import signed_headers

__all__ = ["LoadResult", "run_load"]


@dataclass
class LoadResult:
    seconds: float
    accepted: int = 0
    other: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def merge(self, other: LoadResult) -> None:
        self.accepted += other.accepted
        self.errors += other.errors
        self.latencies_ms += other.latencies_ms
        for status, count in other.other.items():
            self.other[status] = self.other.get(status, 0) + count

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds


def make_event() -> tuple[bytes, str]:
    """A fresh one-unit internal reward.granted event and its id."""
    event_id = f"evt_{uuid.uuid4().hex}"
    body = {
        "id": event_id,
        "type": "reward.granted",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "bench-mall",
        "data": {
            "recipient": {"email": "bench@example.com", "first_name": "B", "last_name": "M"},
            "rewards": [{"reward_code": "GIFT10", "quantity": 1}],
            "reference": "bench",
        },
    }
    return json.dumps(body).encode(), event_id


def _thread(
    url: str, secret: str, deadline: float, interval: float, start: float, out: LoadResult
) -> None:
    scheduled = start
    # The client (and its SSL context, costly to build) exists before the clock starts.
    with httpx.Client(timeout=10.0) as client:
        time.sleep(max(0.0, start - time.perf_counter()))
        while True:
            if interval:
                if scheduled >= deadline:
                    return
                pause = scheduled - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                began = scheduled
                scheduled += interval
            else:
                began = time.perf_counter()
                if began >= deadline:
                    return
            raw, event_id = make_event()
            try:
                response = client.post(
                    url, content=raw, headers=signed_headers(raw, secret, event_id)
                )
            except httpx.HTTPError:
                out.errors += 1
                continue
            out.latencies_ms.append((time.perf_counter() - began) * 1000)
            if response.status_code == 202:
                out.accepted += 1
            else:
                out.other[response.status_code] = out.other.get(response.status_code, 0) + 1


def _process(
    url: str, secret: str, duration: float, threads: int, rate: float, index: int, processes: int
) -> LoadResult:
    # Leave every thread time to build its client before the first scheduled send.
    start = time.perf_counter() + 1.0
    deadline = start + duration
    # Fixed rate: every thread of every process owns an evenly spaced share of the
    # schedule, staggered so that the sends interleave instead of bursting together.
    senders = threads * processes
    interval = senders / rate if rate else 0.0
    results = [LoadResult(duration) for _ in range(threads)]
    workers = [
        threading.Thread(
            target=_thread,
            args=(
                url,
                secret,
                deadline,
                interval,
                start + (index * threads + i) * interval / senders,
                results[i],
            ),
        )
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = LoadResult(duration)
    for result in results:
        total.merge(result)
    return total


def run_load(
    url: str,
    secret: str,
    *,
    duration: float,
    processes: int,
    threads: int,
    rate: float = 0.0,
) -> LoadResult:
    """Drive ``url`` for ``duration`` seconds; ``rate`` > 0 for a fixed total rate."""
    with ProcessPoolExecutor(max_workers=processes) as pool:
        futures = [
            pool.submit(_process, url, secret, duration, threads, rate, index, processes)
            for index in range(processes)
        ]
        total = LoadResult(duration)
        for future in futures:
            total.merge(future.result())
    return total
