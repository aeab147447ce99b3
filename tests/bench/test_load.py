"""The ingest benchmark's load generator against a real loopback HTTP/1.1 server.

The server checks every request's Standard Webhooks signature, so these tests prove the
generator's pre-signed requests are ones our edge would accept, that connections are
kept alive, and that the fixed-rate mode sends the scheduled number of requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.ingest.load import run_load
from worker.signing import SignatureError, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.verified = 0
        self.refused = 0
        self.ids: set[str] = set()
        self.connections: set[tuple[str, int]] = set()


def _handler(recorder: _Recorder, status_for_odd: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        # Headers and body go out in two writes: without this, Nagle holds the second
        # until the client's delayed ACK (40 ms), and the test would measure that.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k: v for k, v in self.headers.items() if k.startswith("webhook-")}
            try:
                meta = verify(raw, headers, [SECRET], tolerance=300)
                ok = True
            except SignatureError:
                ok = False
            with recorder.lock:
                recorder.connections.add(self.client_address)
                if ok:
                    recorder.verified += 1
                    recorder.ids.add(meta.id)
                else:
                    recorder.refused += 1
                count = recorder.verified
            status = status_for_odd if status_for_odd and count % 2 else 202
            body = b'{"status":"accepted"}'
            self.send_response(status if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, _Recorder]]:
    recorder = _Recorder()
    status_for_odd = getattr(request, "param", 0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder, status_for_odd))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/events", recorder
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_closed_loop_requests_are_signed_unique_and_reuse_their_connections(
    server: tuple[str, _Recorder],
) -> None:
    url, recorder = server
    result = run_load(url, SECRET, duration=1.0, connections=4)

    assert result.accepted > 50
    assert result.accepted == recorder.verified and recorder.refused == 0
    assert len(recorder.ids) == recorder.verified  # a fresh event id every time
    assert len(recorder.connections) == 4  # one kept-alive connection each
    assert len(result.latencies_ms) == result.accepted
    assert result.errors == 0


def test_fixed_rate_sends_the_scheduled_number_of_requests(
    server: tuple[str, _Recorder],
) -> None:
    url, recorder = server
    result = run_load(url, SECRET, duration=2.0, connections=4, rate=100.0)

    # 100/s for 2 s: every scheduled send happens, and no more.
    assert result.accepted == recorder.verified == 200
    assert result.percentile(0.5) < 50  # an idle local server answers at once


@pytest.mark.parametrize("server", [500], indirect=True)
def test_answers_other_than_202_are_counted_by_status(server: tuple[str, _Recorder]) -> None:
    url, _ = server
    result = run_load(url, SECRET, duration=0.5, connections=2)

    assert result.other.get(500, 0) > 0
    assert result.accepted > 0
    assert abs(result.other[500] - result.accepted) <= 2  # every other answer
