"""``framing``: when the edge worker's event loop has a whole request to hand to a thread.

Pure function tests; the worker serving real sockets is tests/integration/test_slow_clients_e2e.py.
"""

from __future__ import annotations

import pytest

from webhooks.edge_worker import HEADER_LIMIT_BYTES, Framing, framing

LIMIT = 1024
HEAD = b"POST /events HTTP/1.1\r\nHost: x\r\n"


def _chunks(*parts: bytes) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", Framing.INCOMPLETE),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Framing.COMPLETE),
        (HEAD + b"Content-Length: 10\r\n\r\n12345", Framing.INCOMPLETE),
        (HEAD + b"content-length: 10\r\n\r\n1234567890", Framing.COMPLETE),
        # a declared body over the cap: the app answers 413 without reading it
        (HEAD + b"Content-Length: 1025\r\n\r\n", Framing.COMPLETE),
        # framing the parser refuses (400) from what is here
        (HEAD + b"Content-Length: ten\r\n\r\n", Framing.COMPLETE),
        (HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", Framing.COMPLETE),
        (HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Framing.COMPLETE),
        (HEAD + b"Transfer-Encoding: gzip\r\n\r\n", Framing.COMPLETE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunks(b"abc", b"de"), Framing.COMPLETE),
        (
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunks(b"abc", b"de")[:-2],
            Framing.INCOMPLETE,
        ),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nab", Framing.INCOMPLETE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n", Framing.INCOMPLETE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n", Framing.INCOMPLETE),
        (
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
            Framing.COMPLETE,
        ),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", Framing.COMPLETE),
        # a chunked body past the cap: the app reads cap + 1 bytes and answers 413
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n800\r\n" + b"a" * 1025, Framing.COMPLETE),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * HEADER_LIMIT_BYTES, Framing.HEADERS_TOO_LARGE),
    ],
)
def test_framing(data: bytes, expected: Framing) -> None:
    assert framing(data, LIMIT) is expected
