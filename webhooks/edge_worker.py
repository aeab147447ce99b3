"""The web process's gunicorn worker: gthread, but a thread only ever serves a whole request.

gunicorn's gthread worker (27.x) hands a connection to a pool thread as soon as its first
bytes arrive; the thread then reads the headers and the body with blocking ``recv()`` and
no deadline. A client that sends headers and part of a body and then goes quiet holds that
thread for as long as it keeps the connection open: ``WEB_THREADS`` such clients per
process (16 with the defaults) and webhooks and ``/healthz`` are no longer answered.

``EdgeWorker`` reads each request in the worker's event loop instead, where every
connection waits in one selector at no cost: non-blocking reads until the header section
is complete and the body has arrived (by ``Content-Length`` or chunked framing, up to the
app's body cap). Only then does a thread get the connection, with the request already in
the parser's buffer, so no thread ever waits for a client. A request that has not arrived
in full within ``REQUEST_READ_SECONDS`` is answered 408 and the connection closed; a
header section over ``HEADER_LIMIT_BYTES`` is answered 431. What is not ours to judge (a
malformed length, an unknown transfer coding, a declared body over the cap) is handed to
gunicorn's parser and the app at once, which refuse it without reading further.

What gunicorn's parser refuses (a malformed request line, method or version, an invalid
or repeated framing header, too many or too large header fields, a request line over
``limit_request_line``) is answered by ``EdgeWorker.handle_error`` as the app answers its
own refusals: ``application/problem+json`` with the right status, ``Connection: close``,
and one log line without a traceback. gunicorn's own answer is an HTML page.

TLS and HTTP/2 cleartext are left to gthread as it is (the deployment terminates TLS in
front of the receiver; see docs/operations.md).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import re
import selectors
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import http, util  # type: ignore[import-untyped]
from gunicorn.http import errors as parse_errors  # type: ignore[import-untyped]
from gunicorn.http.wsgi import Response, default_environ  # type: ignore[import-untyped]
from gunicorn.http2 import negotiation  # type: ignore[import-untyped]
from gunicorn.workers.gthread import TConn, ThreadWorker  # type: ignore[import-untyped]

from webhooks.errors import INTERNAL_ERROR_DETAIL, MALFORMED_BODY_DETAIL, problem_document

__all__ = [
    "EdgeWorker",
    "Framing",
    "HEADER_LIMIT_BYTES",
    "REQUEST_READ_SECONDS",
    "Refusal",
    "framing",
    "refusal_for",
]

# From the first byte of a request (or the connection's opening) to its last: a webhook of
# at most MAX_BODY_BYTES arrives in milliseconds; ten seconds allow a slow mobile link.
REQUEST_READ_SECONDS = 10.0
# Our requests carry a few short headers; gunicorn's own limit is ~800 KiB.
HEADER_LIMIT_BYTES = 32 * 1024
# Used when the app declares no MAX_CONTENT_LENGTH (create_app always does).
DEFAULT_BODY_LIMIT_BYTES = 256 * 1024
RECV_BYTES = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Framing(enum.Enum):
    """Where a buffered request stands."""

    INCOMPLETE = "incomplete"  # more bytes are needed
    COMPLETE = "complete"  # a thread can serve it without reading the socket
    HEADERS_TOO_LARGE = "headers-too-large"


def framing(data: bytes | bytearray, body_limit: int) -> Framing:
    """Whether ``data`` holds a whole request (headers, then its body), by HTTP/1.1 framing.

    A request whose framing is invalid counts as complete: gunicorn's parser refuses it
    (400) from the bytes already here. So does a declared body over ``body_limit`` (the
    app answers 413 from the declared length), and a chunked body once more than
    ``body_limit`` bytes of it are here (the app reads ``body_limit + 1`` and answers 413).
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return Framing.HEADERS_TOO_LARGE if len(data) > HEADER_LIMIT_BYTES else Framing.INCOMPLETE
    if head_end > HEADER_LIMIT_BYTES:
        return Framing.HEADERS_TOO_LARGE
    fields = _fields(bytes(data[:head_end]))
    body_start = head_end + 4
    codings = fields.get(b"transfer-encoding", [])
    lengths = fields.get(b"content-length", [])
    if codings:
        if lengths or len(codings) > 1:
            return Framing.COMPLETE  # ambiguous framing: the parser refuses it
        if codings[0].rsplit(b",", 1)[-1].strip().lower() != b"chunked":
            return Framing.COMPLETE
        return _chunked(data, body_start, body_limit)
    if not lengths:
        return Framing.COMPLETE  # no body
    if len(lengths) > 1 or not lengths[0].isdigit():
        return Framing.COMPLETE
    length = int(lengths[0])
    if length > body_limit or len(data) - body_start >= length:
        return Framing.COMPLETE
    return Framing.INCOMPLETE


def _fields(head: bytes) -> dict[bytes, list[bytes]]:
    """Header values by lower-cased name (the request line is skipped)."""
    out: dict[bytes, list[bytes]] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out.setdefault(name.strip().lower(), []).append(value.strip())
    return out


def _chunked(data: bytes | bytearray, position: int, body_limit: int) -> Framing:
    """Walk the chunks from ``position``: complete once the last chunk and trailers are in."""
    decoded = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            # A chunk-size line is a few hex digits: a long one is malformed.
            return Framing.INCOMPLETE if len(data) - position <= 1024 else Framing.COMPLETE
        size_text = bytes(data[position:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return Framing.COMPLETE
        position = line_end + 2
        if size == 0:
            if data[position : position + 2] == b"\r\n" or data.find(b"\r\n\r\n", position) >= 0:
                return Framing.COMPLETE
            over = len(data) - position > HEADER_LIMIT_BYTES
            return Framing.COMPLETE if over else Framing.INCOMPLETE
        if position + size + 2 > len(data):
            here = decoded + max(0, len(data) - position)
            return Framing.COMPLETE if here > body_limit else Framing.INCOMPLETE
        decoded += size
        if decoded > body_limit:
            return Framing.COMPLETE
        position += size + 2


def _problem(status: int, type_: str, detail: str) -> bytes:
    """A whole ``application/problem+json`` response that closes the connection, with the
    members the app's own problems have (``webhooks.errors.problem_document``)."""
    body = json.dumps(problem_document(status, type_, detail)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


REQUEST_TIMEOUT = _problem(
    408,
    "request-timeout",
    f"The request did not arrive in full within {REQUEST_READ_SECONDS:g} s.",
)
HEADERS_TOO_LARGE = _problem(
    431,
    "headers-too-large",
    f"The header section must be at most {HEADER_LIMIT_BYTES} bytes.",
)


@dataclass(frozen=True)
class Refusal:
    """A request gunicorn refused before the app ran, as the problem the client gets."""

    status: int
    type: str
    detail: str


# A header name as RFC 9110 (section 5.6.2) spells a token; only such a name is quoted
# back in a detail (gunicorn may put a whole header line, value and all, in its error).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_FRAMING_HEADERS = frozenset({"CONTENT-LENGTH", "TRANSFER-ENCODING"})
_FRAMING_DETAIL = (
    "The body's length is ambiguous: send one Content-Length of digits, or "
    "Transfer-Encoding ending in chunked, not both."
)


# gunicorn's parse errors whose problem never depends on the request or the settings.
_FIXED_REFUSALS: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Refusal], ...
] = (
    (
        parse_errors.InvalidRequestLine,
        Refusal(
            400,
            "invalid-request-line",
            "The request line must be `METHOD target HTTP/1.1`, ending in CRLF.",
        ),
    ),
    (
        parse_errors.InvalidRequestMethod,
        Refusal(
            400, "invalid-method", "The method must be an HTTP method in upper case, e.g. POST."
        ),
    ),
    (
        parse_errors.InvalidHTTPVersion,
        Refusal(400, "invalid-http-version", "The HTTP version must be HTTP/1.0 or HTTP/1.1."),
    ),
    (
        parse_errors.InvalidHeaderName,
        Refusal(
            400,
            "invalid-header",
            "A header name is not a token (letters, digits and !#$%&'*+-.^_`|~; "
            "no underscores, spaces or other bytes).",
        ),
    ),
    (
        parse_errors.ObsoleteFolding,
        Refusal(
            400,
            "invalid-header",
            "A header value continues on the next line (obsolete line folding).",
        ),
    ),
    (
        parse_errors.InvalidSchemeHeaders,
        Refusal(400, "invalid-header", "The forwarded-scheme headers contradict each other."),
    ),
    (
        parse_errors.UnsupportedTransferCoding,
        Refusal(
            501,
            "unsupported-transfer-coding",
            "Transfer-Encoding must be chunked; other codings are not supported.",
        ),
    ),
    (
        parse_errors.ExpectationFailed,
        Refusal(417, "expectation-failed", "Only `Expect: 100-continue` is supported."),
    ),
    (
        (
            parse_errors.InvalidChunkSize,
            parse_errors.ChunkMissingTerminator,
            parse_errors.InvalidChunkExtension,
        ),
        Refusal(400, "malformed-body", MALFORMED_BODY_DETAIL),
    ),
    (
        (parse_errors.InvalidProxyLine, parse_errors.InvalidProxyHeader),
        Refusal(400, "invalid-proxy-header", "The PROXY protocol header is malformed."),
    ),
    (
        parse_errors.ForbiddenProxyRequest,
        Refusal(403, "proxy-forbidden", "The PROXY protocol is not accepted from this address."),
    ),
    (
        parse_errors.InvalidH2CPreface,
        Refusal(
            400, "invalid-http2-preface", "The connection did not open with the HTTP/2 preface."
        ),
    ),
)


def refusal_for(exc: BaseException, cfg: Any) -> Refusal | None:
    """The problem for an error gunicorn raised while reading a request; None when the
    error is ours (a bug, or a response header the app got wrong): a 500.

    Details are fixed sentences with our limits, never the client's bytes.
    """
    if isinstance(exc, parse_errors.InvalidResponseHeader | parse_errors.InvalidResponseHeaderName):
        return None
    if isinstance(exc, parse_errors.LimitRequestLine):
        return Refusal(
            414,
            "request-line-too-long",
            f"The request line (method, target, version) must be at most "
            f"{cfg.limit_request_line} bytes.",
        )
    if isinstance(exc, parse_errors.LimitRequestHeaders):
        return Refusal(
            431,
            "headers-too-large",
            f"At most {cfg.limit_request_fields} header fields of at most "
            f"{cfg.limit_request_field_size} bytes each are accepted.",
        )
    if isinstance(exc, parse_errors.InvalidHeader):
        return Refusal(400, "invalid-header", _invalid_header_detail(exc))
    for kinds, refusal in _FIXED_REFUSALS:
        if isinstance(exc, kinds):
            return refusal
    if isinstance(exc, ssl.SSLError):
        return Refusal(400, "tls-handshake-failed", "The TLS handshake failed.")
    return None


def _invalid_header_detail(exc: Any) -> str:
    name = str(getattr(exc, "hdr", ""))
    if name.upper() in _FRAMING_HEADERS:
        return _FRAMING_DETAIL
    if _TOKEN.fullmatch(name):
        return (
            f"The {name.title()} header is invalid: repeated where one is allowed, or its "
            "value holds a control character."
        )
    return "A header line is malformed: each must be `Name: value`, ending in CRLF."


INTERNAL_ERROR = _problem(500, "internal-error", INTERNAL_ERROR_DETAIL)


@dataclass
class _Reading:
    """A connection whose request is still arriving."""

    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    continued: bool = False  # "100 Continue" was sent


class EdgeWorker(ThreadWorker):  # type: ignore[misc]
    """gthread whose event loop reads whole requests before a pool thread serves them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Insertion order is deadline order: every deadline is start + REQUEST_READ_SECONDS.
        self.reading: dict[TConn, _Reading] = {}
        self.body_limit = DEFAULT_BODY_LIMIT_BYTES

    def load_wsgi(self) -> None:
        super().load_wsgi()
        config = getattr(self.wsgi, "config", None)
        if isinstance(config, Mapping) and config.get("MAX_CONTENT_LENGTH"):
            self.body_limit = int(config["MAX_CONTENT_LENGTH"])

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """Answer what gunicorn raised outside the app as a problem, not gunicorn's HTML.

        A client's fault is one log line naming the problem type (no traceback, no
        request bytes: a header line may hold a credential); anything else is logged
        with its traceback and answered with a generic 500.
        """
        started = datetime.now()
        refusal = refusal_for(exc, self.cfg)
        if refusal is None:
            self.log.error("unhandled %s serving a request", type(exc).__name__, exc_info=exc)
            response = INTERNAL_ERROR
            status = 500
        else:
            self.log.info(
                "request refused before the app: %d %s (%s)",
                refusal.status,
                refusal.type,
                type(exc).__name__,
            )
            response = _problem(refusal.status, refusal.type, refusal.detail)
            status = refusal.status
        try:
            util.write_nonblock(client, response)
            # FIN now: the thread closes the socket next, and gunicorn never reads the rest.
            client.shutdown(socket.SHUT_WR)
        except OSError:
            self.log.debug("Failed to send error message.")
        if req is None and isinstance(exc, parse_errors.InvalidHeader):
            req = exc.req  # parsed up to the bad header: enough for the access log
        if req is not None:
            self._log_access(req, client, addr, status, len(response), started)

    def _log_access(
        self, req: Any, client: Any, addr: Any, status: int, length: int, started: datetime
    ) -> None:
        """The access-log line gunicorn writes for a refused request (when one is kept)."""
        addr = addr or ("", -1)  # a unix socket
        environ = default_environ(req, client, self.cfg)
        environ["REMOTE_ADDR"] = addr[0]
        environ["REMOTE_PORT"] = str(addr[1])
        resp = Response(req, client, self.cfg)
        resp.status = f"{status} {HTTPStatus(status).phrase}"
        resp.response_length = length
        self.log.access(resp, req, environ, datetime.now() - started)

    def _buffers(self, client: Any) -> bool:
        """Plain HTTP/1.1 connections are read here; TLS and h2c go the gthread way."""
        return not self.cfg.is_ssl and not negotiation.prior_knowledge_allowed(self.cfg, client)

    # the event loop's side ------------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        if self._buffers(client_addr):
            self._read(conn, b"")
        else:
            client_sock.setblocking(True)
            self.enqueue_req(conn)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection has its next request coming: read it here first."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read(conn, b"")

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """Bytes read ahead behind a served request (pipelining) start the next read here."""
        kept = (
            self.alive
            and not fs.cancelled()
            and fs.exception() is None
            and fs.result() is True
            and conn.parser is not None
            and not conn.is_http2
        )
        if kept:
            ahead = conn.parser.unreader.take_buffered()
            if ahead:
                self._read(conn, ahead)
                return
        super().finish_request(conn, fs)

    def _read(self, conn: TConn, ahead: bytes) -> None:
        reading = _Reading(time.monotonic() + REQUEST_READ_SECONDS, bytearray(ahead))
        self.reading[conn] = reading
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if ahead:
            self._advance(conn, reading)

    def _on_readable(self, conn: TConn, _sock: socket.socket) -> None:
        reading = self.reading.get(conn)
        if reading is None:
            return
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # closed or reset by the client
            self._forget(conn)
            self._close(conn)
            return
        reading.buffer += data
        try:
            self._advance(conn, reading)
        except Exception:  # a bug here must not take the worker's event loop down
            self.log.exception("Error reading a request")
            self._forget(conn)
            self._close(conn)

    def _advance(self, conn: TConn, reading: _Reading) -> None:
        state = framing(reading.buffer, self.body_limit)
        if state is Framing.INCOMPLETE:
            if not reading.continued and _expects_continue(reading.buffer):
                # The client waits for this before it sends the body.
                reading.continued = True
                _send(conn.sock, CONTINUE)
            return
        self._forget(conn)
        if state is Framing.HEADERS_TOO_LARGE:
            self._refuse(conn, HEADERS_TOO_LARGE)
            return
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(reading.buffer))
        conn.data_ready = True  # the thread must not wait for the socket either
        self.enqueue_req(conn)

    def murder_pending(self) -> None:
        """Also: answer 408 to requests past their deadline; when stopping, close idle
        connections (nothing sent yet) at once."""
        super().murder_pending()
        now = time.monotonic()
        for conn, reading in list(self.reading.items()):
            idle_at_stop = not self.alive and not reading.buffer
            if reading.deadline > now and not idle_at_stop:
                if self.alive:
                    break
                continue
            self._forget(conn)
            if reading.buffer:
                _count_timeout()
                self._refuse(conn, REQUEST_TIMEOUT)
            else:
                self._close(conn)

    def _forget(self, conn: TConn) -> None:
        self.reading.pop(conn, None)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)

    def _refuse(self, conn: TConn, response: bytes) -> None:
        _send(conn.sock, response)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()


def _count_timeout() -> None:
    # Imported here, in the worker process: gunicorn's master imports this module to find
    # the worker class, before ``on_starting`` has created the Prometheus multiprocess
    # directory that importing the metrics writes to.
    from worker import metrics

    metrics.edge_request_timed_out()


def _expects_continue(data: bytes | bytearray) -> bool:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    expect = _fields(bytes(data[:head_end])).get(b"expect", [])
    return any(value.lower() == b"100-continue" for value in expect)


def _send(sock: socket.socket, data: bytes) -> None:
    """Best effort, never blocking: a small response fits in the socket's send buffer."""
    with contextlib.suppress(OSError):
        sock.send(data)
