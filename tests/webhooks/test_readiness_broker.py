"""/readyz keeps its broker connection: many probes, few connections, honest answers.

The broker is the real Redis reached through a loopback TCP relay that counts the
connections opened through it and can be cut (the broker unreachable) and restored.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.conftest import STORE_DB, TEST_REDIS_HOST, TEST_REDIS_PORT
from webhooks import create_app
from worker.config import Settings

PROBES = 30
MAX_PROBE_CONNECTIONS = 2  # webhooks.broker_probe.BROKER_PROBE_CONNECTIONS


class TcpRelay:
    """Forwards 127.0.0.1:``port`` to the test Redis; counts accepted connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """The broker becomes unreachable: no listener, every relayed connection cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown first: a thread blocked in accept() would keep the port listening
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection((TEST_REDIS_HOST, TEST_REDIS_PORT), timeout=5)
            with self._lock:
                self.accepted += 1
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def relay() -> Iterator[TcpRelay]:
    running = TcpRelay()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def relayed_client(settings: Settings, relay: TcpRelay):
    app = create_app(replace(settings, broker_url=f"redis://127.0.0.1:{relay.port}/{STORE_DB}"))
    yield app.test_client()
    app.extensions["rewardrelay"].broker_probe.close()


def _ready_until(client, wanted: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == wanted or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_many_readiness_probes_share_a_few_broker_connections(relayed_client, relay) -> None:
    # given an edge whose broker sits behind a counting relay
    # when the probe is called many times, from several threads at once
    answers: list[int] = []

    def probe(times: int) -> None:
        for _ in range(times):
            answers.append(relayed_client.get("/readyz").status_code)

    threads = [threading.Thread(target=probe, args=(PROBES // 3,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # then every probe was ready, over at most the probe's small pool of connections
    assert answers == [200] * PROBES
    assert 1 <= relay.accepted <= MAX_PROBE_CONNECTIONS


def test_readiness_goes_false_when_the_broker_is_unreachable_and_true_when_it_is_back(
    relayed_client, relay
) -> None:
    # given a ready edge (its probe connection open)
    assert relayed_client.get("/readyz").status_code == 200
    # when the broker becomes unreachable
    relay.stop()
    started = time.monotonic()
    down = relayed_client.get("/readyz")
    # then readiness is false at once, naming the broker
    assert time.monotonic() - started < 5
    assert down.status_code == 503
    assert down.get_json()["errors"] == {"redis": "ok", "broker": "unavailable"}
    # and when it is back, readiness is true again
    relay.start()
    assert _ready_until(relayed_client, 200).status_code == 200
