"""Load generation: keep-alive HTTP/1.1 connections on asyncio, requests signed in advance.

The generator shares the machine's two cores with the server it measures, so it must cost
as little as possible per request: every event is built and signed before the clock
starts, and each connection writes pre-encoded request bytes and parses only the status
line and ``Content-Length`` of the answer. (The previous generator, threads of httpx
clients signing on the fly, took as much CPU per request as the server did; it measured
the two processes' share of the CPU more than the server.)

Two modes:
* closed loop: every connection sends as soon as its previous answer arrives (throughput);
* fixed rate: sends are scheduled at a constant total rate and latency is measured from
  the *scheduled* time, so a stalled server is not hidden by the generator waiting for it
  (no coordinated omission); when every connection is busy a send waits in line, and
  that wait counts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from worker.signing import signed_headers

__all__ = ["LoadResult", "make_event", "run_load", "signed_request"]


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

    def count(self, status: int) -> None:
        if status == 202:
            self.accepted += 1
        else:
            self.other[status] = self.other.get(status, 0) + 1

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


def signed_request(host: str, path: str, secret: str) -> bytes:
    """One complete HTTP/1.1 request for a fresh event, signed with ``secret``."""
    raw, event_id = make_event()
    headers = signed_headers(raw, secret, event_id)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(raw)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


class _Requests:
    """Signed requests made ahead of time, handed out one by one (never reused)."""

    def __init__(self, host: str, path: str, secret: str, count: int) -> None:
        made = [signed_request(host, path, secret) for _ in range(count)]
        self._items: Iterator[bytes] = iter(made)
        self._host, self._path, self._secret = host, path, secret

    def next(self) -> bytes:
        # Running out means the estimate was low; signing one now costs a little latency.
        return next(self._items, None) or signed_request(self._host, self._path, self._secret)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request on a kept-alive connection; the answer's status (body discarded)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str,
    port: int,
    requests: _Requests,
    out: LoadResult,
    deadline: float,
    schedule: asyncio.Queue[float] | None,
) -> None:
    """One connection: closed loop, or taking scheduled send times from ``schedule``."""
    reader = writer = None
    try:
        while True:
            if schedule is None:
                began = time.perf_counter()
                if began >= deadline:
                    return
            else:
                began = await schedule.get()
                if began < 0:  # the scheduler is done
                    return
            request = requests.next()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                status = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                out.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            out.latencies_ms.append((time.perf_counter() - began) * 1000)
            out.count(status)
    finally:
        if writer is not None:
            writer.close()


async def _scheduler(
    queue: asyncio.Queue[float], start: float, deadline: float, rate: float, stoppers: int
) -> None:
    """Put one scheduled send time on ``queue`` every 1/rate seconds until ``deadline``."""
    interval, sent = 1.0 / rate, 0
    while (scheduled := start + sent * interval) < deadline:
        pause = scheduled - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        # Everything already due goes out now (sleep overshoots by a millisecond or so).
        now = time.perf_counter()
        while (scheduled := start + sent * interval) <= now and scheduled < deadline:
            queue.put_nowait(scheduled)
            sent += 1
    for _ in range(stoppers):
        queue.put_nowait(-1.0)


async def _drive(
    url: str, secret: str, duration: float, connections: int, rate: float, share: float
) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    # Enough signed requests for the run: the fixed rate's share, or a generous estimate of
    # what a closed loop can reach (more are signed on demand if it goes faster).
    expected = int(rate * share * duration * 1.1) + connections if rate else 1500 * duration
    requests = _Requests(f"{host}:{port}", parts.path or "/", secret, int(expected))
    out = LoadResult(duration)
    start = time.perf_counter() + 0.2
    deadline = start + duration
    schedule: asyncio.Queue[float] | None = asyncio.Queue() if rate else None
    tasks = [
        asyncio.create_task(_connection(host, port, requests, out, deadline, schedule))
        for _ in range(connections)
    ]
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    if schedule is not None:
        await _scheduler(schedule, start, deadline, rate * share, connections)
    await asyncio.gather(*tasks)
    return out


def _process(
    url: str, secret: str, duration: float, connections: int, rate: float, share: float
) -> LoadResult:
    return asyncio.run(_drive(url, secret, duration, connections, rate, share))


def run_load(
    url: str,
    secret: str,
    *,
    duration: float,
    connections: int = 32,
    processes: int = 1,
    rate: float = 0.0,
) -> LoadResult:
    """Drive ``url`` for ``duration`` seconds; ``rate`` > 0 for a fixed total rate.

    ``connections`` is per process; with ``processes`` > 1 each takes an equal share of
    the rate.
    """
    if processes == 1:
        return _process(url, secret, duration, connections, rate, 1.0)
    share = 1.0 / processes
    with ProcessPoolExecutor(max_workers=processes) as pool:
        futures = [
            pool.submit(_process, url, secret, duration, connections, rate, share)
            for _ in range(processes)
        ]
        total = LoadResult(duration)
        for future in futures:
            total.merge(future.result())
    return total
