"""A loopback Sentry: a real HTTP server the real sentry-sdk transport posts envelopes to,
and a reader of the error events in them. Shared by the unit and end-to-end tests."""

from __future__ import annotations

import gzip
import json
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SentryInbox(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SentryHandler)
        self.envelopes: list[bytes] = []

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server_port}/42"


class _SentryHandler(BaseHTTPRequestHandler):
    server: SentryInbox

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        self.server.envelopes.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        return


def error_events(envelopes: list[bytes]) -> list[dict[str, Any]]:
    """The items of type ``event`` across all envelopes (not sessions, not transactions)."""
    events = []
    for envelope in envelopes:
        lines = envelope.split(b"\n")
        for header_line, payload in zip(lines[1::2], lines[2::2], strict=False):
            if header_line.strip() and json.loads(header_line).get("type") == "event":
                events.append(json.loads(payload))
    return events
