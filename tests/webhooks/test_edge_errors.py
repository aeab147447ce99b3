"""What gunicorn refuses before the app runs, under the edge worker: problem+json.

gunicorn's own answer to a request its parser refuses is an HTML page (and a log line
quoting the request's bytes). ``EdgeWorker.handle_error`` answers the way the app answers
its own refusals. Real gunicorn (``gunicorn.conf.py``) on loopback, raw sockets.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.webhooks.serving import LEAKED, gunicorn_server
from webhooks.edge_worker import HEADER_LIMIT_BYTES, REQUEST_TIMEOUT
from webhooks.errors import PROBLEM_BASE

SECRET = "Bearer s3cr3t-token-in-a-broken-line"
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


def _exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` whole, read until the server closes: status, headers, body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _problem(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The problem document, after checking it is one, whole, and the connection closes."""
    assert headers.get("content-type") == "application/problem+json", (status, headers, body)
    assert headers.get("connection") == "close"
    assert int(headers["content-length"]) == len(body)
    document: dict[str, Any] = json.loads(body)
    assert set(document) == {"type", "title", "status", "detail"}
    assert document["status"] == status
    assert document["type"].startswith(PROBLEM_BASE)
    assert document["title"] and document["detail"]
    return document


# request bytes → (status, problem type, a word the detail must hold)
REFUSED = {
    "two Content-Length headers": (
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        (400, "invalid-header", "Content-Length"),
    ),
    "Content-Length and chunked": (
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        (400, "invalid-header", "Transfer-Encoding"),
    ),
    "a control byte in a header value": (
        GET + b"X-Note: a\x01b\r\n\r\n",
        (400, "invalid-header", "X-Note"),
    ),
    "a header name that is not a token": (
        GET + b"X@Note: 1\r\n\r\n",
        (400, "invalid-header", "token"),
    ),
    "a header line without a colon": (
        GET + f"Authorization {SECRET}\r\n\r\n".encode(),
        (400, "invalid-header", "Name: value"),
    ),
    "101 header lines": (
        GET + b"".join(b"X-Line-%d: 1\r\n" % i for i in range(100)) + b"\r\n",
        (431, "headers-too-large", "100 header fields"),
    ),
    "a header field over 8190 bytes": (
        GET + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
        (431, "headers-too-large", "8190 bytes"),
    ),
    "a request line over 4094 bytes": (
        b"GET /healthz?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        (414, "request-line-too-long", "4094 bytes"),
    ),
    "a request line that is not one": (
        b"GARBAGE\r\nHost: x\r\n\r\n",
        (400, "invalid-request-line", "METHOD target HTTP/1.1"),
    ),
    "a lower-case method": (
        b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        (400, "invalid-method", "upper case"),
    ),
    "an unknown HTTP version": (
        b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
        (400, "invalid-http-version", "HTTP/1.1"),
    ),
    "an unknown transfer coding": (
        b"POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n",
        (501, "unsupported-transfer-coding", "chunked"),
    ),
    "an expectation other than 100-continue": (
        GET + b"Expect: 200-ok\r\n\r\n",
        (417, "expectation-failed", "100-continue"),
    ),
}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The receiver's worker class serving the failing app (the refusals above happen
    before any app runs; the app shows what a real internal error gets)."""
    tmp = tmp_path_factory.mktemp("edge")
    log = tmp / "gunicorn.log"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")}
    with gunicorn_server(env, log, "tests.webhooks.serving:failing") as url:
        yield url, log


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_gunicorn_refuses_is_a_problem_document(edge: Any, case: str) -> None:
    url, log = edge
    request, (status, type_, said) = REFUSED[case]

    logged_before = log.stat().st_size

    # when
    answer, headers, body = _exchange(url, request)

    # then the client gets the app's kind of refusal, with the right status
    assert answer == status, (case, body)
    problem = _problem(answer, headers, body)
    assert problem["type"] == PROBLEM_BASE + type_
    assert said in problem["detail"], problem
    # and the operator one line naming it, with no traceback and none of the request
    text = log.read_bytes()[logged_before:].decode()
    assert f"request refused before the app: {status} {type_}" in text
    assert "Traceback" not in text
    assert SECRET not in text and SECRET not in body.decode()


def test_the_edge_workers_own_431_is_a_problem_document_too(edge: Any) -> None:
    # when a header section never ends within the worker's limit
    answer, headers, body = _exchange(edge[0], GET + b"X-Filler: " + b"a" * HEADER_LIMIT_BYTES)

    # then
    assert answer == 431
    assert _problem(answer, headers, body)["type"] == PROBLEM_BASE + "headers-too-large"


def test_the_edge_workers_408_is_a_problem_document_too() -> None:
    # (served when a request stalls: tests/integration/test_slow_clients_e2e.py waits for one)
    head, _, body = REQUEST_TIMEOUT.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}

    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert _problem(408, headers, body) == {
        "type": PROBLEM_BASE + "request-timeout",
        "title": "Request timeout",
        "status": 408,
        "detail": "The request did not arrive in full within 10 s.",
    }


def test_a_real_internal_error_is_a_generic_500_problem(edge: Any) -> None:
    url, log = edge

    # when the app raises where no Flask error handler sees it
    answer, headers, body = _exchange(url, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")

    # then the client learns nothing of the error
    assert answer == 500
    problem = _problem(answer, headers, body)
    assert problem["type"] == PROBLEM_BASE + "internal-error"
    assert problem["detail"] == "An unexpected error occurred."
    assert LEAKED not in body.decode()
    # and the operator gets its traceback (a bug is worth one)
    assert "unhandled RuntimeError serving a request" in log.read_text()
    assert "Traceback" in log.read_text()
