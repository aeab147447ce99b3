"""Slow clients against the receiver: does it keep answering while they hold connections?

``measure(url, secret)`` opens ``slow`` connections that each send a signed webhook's
headers and part of its body, then go quiet (what a stalled or hostile sender does). While
they are held it sends signed webhooks, one at a time on fresh connections, and
``/healthz`` probes, and records how long each took (a request not answered within
``request_timeout`` counts as failed). Then it waits for the server to deal with the slow
connections and records how each ended: answered (by status), closed without an answer,
or still open.

``python -m bench.slow_clients`` runs it against gunicorn started from ``gunicorn.conf.py``
(and ``--worker-class gthread`` for gunicorn's own threaded worker, the "before").
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.ingest.load import make_event
from worker.signing import signed_headers

__all__ = ["SlowClientResult", "measure", "partial_request"]


@dataclass
class SlowClientResult:
    slow_opened: int = 0
    # Slow connections still open (not answered, not closed) when the probes had finished.
    slow_held_during_probes: int = 0
    webhook_ms: list[float] = field(default_factory=list)
    webhook_statuses: Counter[int] = field(default_factory=Counter)
    webhook_failed: int = 0
    health_ms: list[float] = field(default_factory=list)
    health_failed: int = 0
    # How the slow connections ended: "408", "closed", "open" ...
    slow_endings: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def percentile(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, object]:
        return {
            "slow_opened": self.slow_opened,
            "slow_held_during_probes": self.slow_held_during_probes,
            "webhooks": len(self.webhook_ms) + self.webhook_failed,
            "webhook_statuses": dict(self.webhook_statuses),
            "webhook_failed": self.webhook_failed,
            "webhook_p50_ms": round(self.percentile(self.webhook_ms, 0.50), 1),
            "webhook_p99_ms": round(self.percentile(self.webhook_ms, 0.99), 1),
            "webhook_max_ms": round(max(self.webhook_ms, default=float("nan")), 1),
            "healthz_failed": self.health_failed,
            "healthz_p99_ms": round(self.percentile(self.health_ms, 0.99), 1),
            "slow_endings": dict(self.slow_endings),
        }


def partial_request(host: str, secret: str, sent_fraction: float = 0.5) -> bytes:
    """A signed webhook's request line and headers, and the first part of its body."""
    raw, event_id = make_event()
    headers = signed_headers(raw, secret, event_id)
    lines = [
        "POST /events HTTP/1.1",
        f"Host: {host}",
        f"Content-Length: {len(raw)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + raw[: int(len(raw) * sent_fraction)]


def _full_request(host: str, secret: str) -> bytes:
    raw, event_id = make_event()
    headers = signed_headers(raw, secret, event_id)
    lines = [
        "POST /events HTTP/1.1",
        f"Host: {host}",
        f"Content-Length: {len(raw)}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


async def _status(reader: asyncio.StreamReader) -> int:
    """The status of the final response (interim 1xx responses are skipped)."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        if status >= 200:
            return status


async def _exchange(host: str, port: int, request: bytes, timeout: float) -> int:
    async def go() -> int:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await writer.drain()
            return await _status(reader)
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)


class _Slow:
    """One slow connection: its partial request is sent; it then only listens."""

    def __init__(self) -> None:
        self.ending = "open"
        self.ended = asyncio.Event()

    async def run(self, host: str, port: int, request: bytes, opened: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            self.ending = "refused"
            self.ended.set()
            opened.set()
            return
        try:
            writer.write(request)
            await writer.drain()
            opened.set()
            try:
                self.ending = str(await _status(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                self.ending = "closed"
        finally:
            self.ended.set()
            writer.close()


async def _measure(
    url: str,
    secret: str,
    *,
    slow: int,
    webhooks: int,
    probes: int,
    request_timeout: float,
    settle: float,
    wait_for_endings: float,
    give_up_after: int,
) -> SlowClientResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    netloc = f"{host}:{port}"
    result = SlowClientResult()
    clients = [_Slow() for _ in range(slow)]
    opened = [asyncio.Event() for _ in range(slow)]
    tasks = [
        asyncio.create_task(client.run(host, port, partial_request(netloc, secret), event))
        for client, event in zip(clients, opened, strict=True)
    ]
    await asyncio.gather(*(event.wait() for event in opened))
    result.slow_opened = sum(1 for client in clients if client.ending != "refused")
    # Let the server take them in (gthread hands each to a thread on its first bytes).
    await asyncio.sleep(settle)

    requests = [_full_request(netloc, secret) for _ in range(webhooks)]
    health = f"GET /healthz HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n\r\n".encode()
    for index, request in enumerate(requests):
        if result.webhook_failed >= give_up_after:
            break  # the receiver is not answering: more tries would only take time
        began = time.perf_counter()
        try:
            status = await _exchange(host, port, request, request_timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            result.webhook_failed += 1
        else:
            result.webhook_ms.append((time.perf_counter() - began) * 1000)
            result.webhook_statuses[status] += 1
        if index % max(1, webhooks // max(1, probes)) == 0:
            began = time.perf_counter()
            try:
                if await _exchange(host, port, health, request_timeout) != 200:
                    result.health_failed += 1
                else:
                    result.health_ms.append((time.perf_counter() - began) * 1000)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                result.health_failed += 1
    result.slow_held_during_probes = sum(1 for client in clients if not client.ended.is_set())

    with_deadline = asyncio.gather(*(client.ended.wait() for client in clients))
    try:
        await asyncio.wait_for(with_deadline, wait_for_endings)
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result.slow_endings.update(client.ending for client in clients)
    return result


def measure(
    url: str,
    secret: str,
    *,
    slow: int = 64,
    webhooks: int = 200,
    probes: int = 20,
    request_timeout: float = 5.0,
    settle: float = 0.5,
    wait_for_endings: float = 15.0,
    give_up_after: int = 5,
) -> SlowClientResult:
    """Hold ``slow`` stalled connections while sending ``webhooks`` signed webhooks."""
    return asyncio.run(
        _measure(
            url,
            secret,
            slow=slow,
            webhooks=webhooks,
            probes=probes,
            request_timeout=request_timeout,
            settle=settle,
            wait_for_endings=wait_for_endings,
            give_up_after=give_up_after,
        )
    )
