"""Slow and stalled clients against the receiver as production runs it (gunicorn.conf.py).

64 connections that send a signed webhook's headers and half its body, then go quiet, are
four times the threads of the two gunicorn processes: with gunicorn's own gthread worker
the receiver stops answering (bench.slow_clients measures both). With ``EdgeWorker`` the
webhooks and probes sent meanwhile are answered at their usual latency, and each stalled
connection gets 408 at its read deadline. The other tests pin what the event loop's
request framing must get right: chunked bodies, pipelined and kept-alive requests,
``Expect: 100-continue``, oversize headers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.ingest.load import make_event
from bench.slow_clients import measure
from tests.integration.conftest import Stack
from webhooks.edge_worker import HEADER_LIMIT_BYTES, REQUEST_READ_SECONDS
from worker.signing import signed_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def web(make_stack: Any, tmp_path: Any) -> Stack:
    # One metrics directory, so a scrape sums both gunicorn processes.
    metrics_dir = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    stack: Stack = make_stack(metrics_dir, worker=False, relay=False, web="gunicorn")
    return stack


def _address(stack: Stack) -> tuple[str, int]:
    parts = urlsplit(stack.edge_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@pytest.fixture
def connect(web: Stack) -> Iterator[Any]:
    opened: list[socket.socket] = []

    def open_one() -> socket.socket:
        sock = socket.create_connection(_address(web), timeout=REQUEST_READ_SECONDS + 5)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def _secret(stack: Stack) -> str:
    return stack.env["EVENT_SECRETS"].split()[0]


def _signed(stack: Stack, *, chunked: bool = False, extra: str = "") -> tuple[bytes, bytes]:
    """A signed webhook's head (ending in the blank line) and its body as sent."""
    raw, event_id = make_event()
    lines = ["POST /events HTTP/1.1", f"Host: {web_host(stack)}"]
    lines += [
        f"{name}: {value}" for name, value in signed_headers(raw, _secret(stack), event_id).items()
    ]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        half = len(raw) // 2
        body = (
            b"".join(
                f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (raw[:half], raw[half:])
            )
            + b"0\r\n\r\n"
        )
    else:
        lines.append(f"Content-Length: {len(raw)}")
        body = raw
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def web_host(stack: Stack) -> str:
    host, port = _address(stack)
    return f"{host}:{port}"


def _responses(sock: socket.socket, count: int) -> list[int]:
    """Read ``count`` final responses (interim 1xx skipped); their statuses."""
    statuses: list[int] = []
    buffer = b""
    while len(statuses) < count:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            continue
        head, buffer = buffer[:end], buffer[end + 4 :]
        status = int(head[9:12])
        if status < 200:
            continue
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buffer) < length:
            buffer += sock.recv(65536)
        buffer = buffer[length:]
        statuses.append(status)
    return statuses


def test_64_stalled_connections_do_not_stop_webhooks_or_probes(web: Stack) -> None:
    # given 64 connections holding a partial signed webhook each (4x the server's threads)
    # when signed webhooks and /healthz probes are sent while they are held
    result = measure(
        web.edge_url, _secret(web), slow=64, webhooks=100, probes=10, request_timeout=3.0
    )

    # then all 64 were held throughout, and every webhook and probe was answered promptly
    assert result.slow_opened == 64
    assert result.slow_held_during_probes == 64
    assert result.webhook_failed == 0
    assert result.webhook_statuses == {202: 100}
    assert result.health_failed == 0
    assert result.percentile(result.webhook_ms, 0.99) < 1000, result.summary()
    # and each stalled connection was answered 408 at its read deadline
    assert result.slow_endings == {"408": 64}, result.summary()
    # and counted
    exposition = web.http.get(web.edge_url + "/metrics").text
    assert "rewardrelay_edge_request_timeouts_total 64.0" in exposition


def test_a_request_completed_late_but_within_the_deadline_is_served(web: Stack, connect) -> None:
    # given a webhook whose body arrives in two parts, a second apart
    head, body = _signed(web)
    sock = connect()
    sock.sendall(head + body[:10])
    time.sleep(1.0)

    # when the rest arrives
    sock.sendall(body[10:])

    # then it is accepted
    assert _responses(sock, 1) == [202]


def test_a_chunked_body_is_read_whole_before_it_is_served(web: Stack, connect) -> None:
    # given a chunked webhook whose last chunk is held back for a moment
    head, body = _signed(web, chunked=True)
    sock = connect()
    sock.sendall(head + body[:-5])
    time.sleep(0.5)
    sock.sendall(body[-5:])

    # then it is accepted
    assert _responses(sock, 1) == [202]


def test_pipelined_and_kept_alive_requests_are_each_served(web: Stack, connect) -> None:
    # given two whole webhooks and the first half of a third, in one write
    first, second, third = (_signed(web) for _ in range(3))
    sock = connect()
    sock.sendall(b"".join(first) + b"".join(second) + third[0])

    # then the two are answered at once; the third when its body completes
    assert _responses(sock, 2) == [202, 202]
    sock.sendall(third[1])
    assert _responses(sock, 1) == [202]


def test_a_kept_alive_connection_that_stalls_gets_408(web: Stack, connect) -> None:
    # given a served webhook, then the headers of a second one on the same connection
    sock = connect()
    sock.sendall(b"".join(_signed(web)))
    assert _responses(sock, 1) == [202]
    head, _ = _signed(web)
    began = time.monotonic()
    sock.sendall(head)

    # then the stall is answered 408, as a problem document, at the deadline
    answer = b""
    while chunk := sock.recv(65536):  # until the server closes the connection
        answer += chunk
    assert REQUEST_READ_SECONDS - 1 <= time.monotonic() - began <= REQUEST_READ_SECONDS + 3
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Content-Type: application/problem+json" in head
    assert b"/problems/request-timeout" in body


def test_expect_100_continue_gets_its_interim_answer_before_the_body(web: Stack, connect) -> None:
    # given a client that waits for "100 Continue" before sending its body (curl does)
    head, body = _signed(web, extra="Expect: 100-continue")
    sock = connect()
    sock.sendall(head)

    # then the interim answer comes, and after the body the final one
    assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n")
    sock.sendall(body)
    assert _responses(sock, 1) == [202]


def test_an_oversize_header_section_is_refused_with_431(web: Stack, connect) -> None:
    # given a request whose headers never end within the limit
    sock = connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Filler: " + b"a" * (HEADER_LIMIT_BYTES + 10))

    # then
    assert _responses(sock, 1) == [431]


def _first_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The first response's head and body (by its Content-Length)."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(value)
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        if name.strip().lower() == b"content-length"
    )
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head, body[:length]


# Framings gunicorn refuses once the app reads the body, and where each is sent.
MALFORMED_CHUNKED_BODIES = [
    ("/events", b"zz\r\n{}\r\n0\r\n\r\n"),  # a chunk size that is not hex
    ("/events", b"-2\r\n{}\r\n0\r\n\r\n"),  # ... nor unsigned
    ("/events", b"2\r\n{}XX0\r\n\r\n"),  # chunk data without its CRLF
    ("/events", b"2\r\n{}\r\n0\r\nno colon here\r\n\r\n"),  # a malformed trailer
    ("/dead-letters/replay", b"zz\r\n{}\r\n0\r\n\r\n"),  # the admin API's body reader
    ("/admin/sign-in", b"zz\r\n{}\r\n0\r\n\r\n"),  # the console's form parser
]


def test_a_malformed_chunked_body_is_a_400_problem_not_a_500(web: Stack, connect) -> None:
    for path, chunks in MALFORMED_CHUNKED_BODIES:
        # given a request whose chunked framing is broken (gunicorn parses a body only
        # when the app reads it, so the error surfaces inside the app); the console reads
        # forms, the API JSON
        form = path.startswith("/admin/")
        media_type = "application/x-www-form-urlencoded" if form else "application/json"
        sock = connect()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {web_host(web)}\r\n"
            f"Authorization: Bearer {web.env['ADMIN_TOKEN']}\r\n"
            f"Content-Type: {media_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunks
        )

        # then it is refused as the client's fault, with a problem document
        head, body = _first_response(sock)
        assert head.startswith(b"HTTP/1.1 400 "), (path, chunks, head + body)
        assert b"Content-Type: application/problem+json" in head
        assert b"/problems/malformed-body" in body
