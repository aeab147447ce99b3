"""End-to-end harness: real Redis, real Celery worker processes, the receiver behind a
real HTTP server, the relay loop, and both provider sandboxes as HTTP servers on loopback.

Broker queues live in Redis database 15 (the tests' own; ``RR_TEST_BROKER_DB`` picks
another so two checkouts can run the suite at once), and each stack has its own queue
name and key prefix. Timings are shortened through the same
settings an operator would use (lease, backoff, stale threshold), nothing is patched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandboxes import SandboxControl, serve_in_thread
from sandboxes.ifeelgoods import create_app as ifeelgoods_app
from sandboxes.rewardops import create_app as rewardops_app
from tasks.relay import Dispatcher, celery_publisher
from tests.conftest import (
    TEST_ADMIN_TOKEN,
    TEST_CODE_KEY,
    TEST_CONIQ_SECRET,
    TEST_EVENT_SECRET,
    redis_url,
)
from webhooks import create_app
from worker.celery_app import make_celery
from worker.config import Settings
from worker.signing import signed_headers
from worker.stores.crypto import CodeVault
from worker.stores.dead_letters import DeadLetters
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import Ledger
from worker.stores.models import TERMINAL_STATES

BROKER_DB = int(os.environ.get("RR_TEST_BROKER_DB", "15"))
AMQP_URL = os.environ.get("RR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
IFG_KEY, IFG_SECRET = "it-ifg-key", "it-ifg-secret-value-0001"
ROPS_ID, ROPS_SECRET = "it-rops-client", "it-rops-secret-value-0001"
REPO = Path(__file__).resolve().parents[2]


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:20]}"


def coniq_reward(offer_id: str = "1001", event_id: str | None = None) -> dict[str, Any]:
    event_id = event_id or new_event_id()
    return {
        "id": event_id,
        "type": "reward.issued",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme-mall",
        "data": {
            "customer": {
                "id": "cust-42",
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
            },
            "subscription": {"id": "sub-1", "program_id": "prog-1"},
            "reward": {
                "id": f"rw-{event_id[-6:]}",
                "offer_id": offer_id,
                "name": "Gift card",
                "expiry_date": "2027-01-01",
            },
        },
    }


def internal_grant(rewards: list[dict[str, Any]], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or new_event_id(),
        "type": "reward.granted",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme-mall",
        "data": {
            "recipient": {"email": "grace@example.com", "first_name": "Grace", "last_name": "H"},
            "rewards": rewards,
            "reference": "crm-campaign-7",
        },
    }


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class Stack:
    """One running rewardrelay: edge URL, worker processes, relay thread, sandboxes."""

    def __init__(
        self, tmp: Path, ifg_url: str, rops_url: str, extra_env: dict[str, str] | None = None
    ) -> None:
        self.tmp = tmp
        self.prefix = f"rrit-{uuid.uuid4().hex[:8]}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RR_", "CELERY_"))},
            "REDIS_URL": redis_url(BROKER_DB),
            "RR_KEY_PREFIX": self.prefix,
            "TASK_QUEUE": f"{self.prefix}-tasks",
            "CONIQ_WEBHOOK_SECRETS": TEST_CONIQ_SECRET,
            "EVENT_SECRETS": TEST_EVENT_SECRET,
            "ADMIN_TOKEN": TEST_ADMIN_TOKEN,
            "CODE_KEYS": TEST_CODE_KEY,
            "IFEELGOODS_BASE_URL": f"{ifg_url}/fulfillment/v2",
            "IFEELGOODS_API_KEY": IFG_KEY,
            "IFEELGOODS_API_SECRET": IFG_SECRET,
            "REWARDOPS_BASE_URL": f"{rops_url}/api/v4",
            "REWARDOPS_CLIENT_ID": ROPS_ID,
            "REWARDOPS_CLIENT_SECRET": ROPS_SECRET,
            "PROVIDER_TIMEOUT_SECONDS": "1.0",
            "RETRY_BASE_SECONDS": "0.1",
            "RETRY_MAX_DELAY_SECONDS": "0.8",
            "RETRY_MAX_ATTEMPTS": "12",
            "UNIT_STALE_SECONDS": "3",
            "TASK_LEASE_SECONDS": "4",
            "DELIVERY_POLL_SECONDS": "0.2",
            "SWEEP_INTERVAL_SECONDS": "1",
            "PYTHONPATH": str(REPO),
            **(extra_env or {}),
        }
        self.settings = Settings.from_env(self.env)
        self.redis = redis.Redis.from_url(self.settings.redis_url)
        self.keys = Keys(self.prefix)
        self.inbox = Inbox(self.redis, self.keys)
        self.ledger = Ledger(self.redis, self.keys, CodeVault(self.settings.code_keys))
        self.dead_letters = DeadLetters(self.redis, self.keys)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.broker = "redis"
        self._stop = threading.Event()
        self._relay: threading.Thread | None = None
        self._edge: BaseWSGIServer | None = None
        self.edge_url = ""
        self.http = httpx.Client(timeout=10)

    # processes -----------------------------------------------------------------------
    def start_edge(self) -> None:
        app = create_app(self.settings)
        edge = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self._edge = edge
        threading.Thread(target=edge.serve_forever, daemon=True).start()
        self.edge_url = f"http://127.0.0.1:{edge.server_port}"

    def start_web_process(self, workers: int = 2) -> subprocess.Popen[bytes]:
        """The receiver as production runs it: gunicorn with gunicorn.conf.py, its own
        processes (``LOG_FORMAT``, ``PROMETHEUS_MULTIPROC_DIR`` etc. from ``self.env``)."""
        port = _free_port()
        log = open(self.tmp / f"web-{self.prefix}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(REPO / "gunicorn.conf.py"),
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
            ],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)  # stopped (SIGTERM to its group) with the workers
        self.edge_url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.http.get(self.edge_url + "/healthz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"web not ready:\n{self.worker_logs()[-3000:]}")

    def start_relay(self) -> None:
        dispatcher = Dispatcher(
            redis.Redis.from_url(self.settings.redis_url),
            self.keys,
            celery_publisher(make_celery(self.settings)),
            stale_after=self.settings.unit_stale_seconds,
            consumer="it-relay",
        )
        dispatcher.ensure_group()

        def loop() -> None:
            last_reclaim = 0.0
            while not self._stop.is_set():
                try:
                    dispatcher.relay_once(block_ms=100)
                    dispatcher.publish_due()
                    if time.time() - last_reclaim > 2:
                        dispatcher.reclaim_outbox(min_idle_ms=2000)
                        last_reclaim = time.time()
                except redis.RedisError:
                    time.sleep(0.2)

        self._relay = threading.Thread(target=loop, daemon=True, name="it-relay")
        self._relay.start()

    def start_worker(
        self, concurrency: int = 2, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        name = name or f"w{len(self.workers)}-{self.prefix}"
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "worker",
                "-c",
                str(concurrency),
                "-P",
                "prefork",
                "-l",
                "info",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "-E",
            ],
            # These tests exercise the prefork pool; the chaos run covers the threads default.
            env={**self.env, "WORKER_POOL": "prefork"},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        self._wait_worker_ready(name)
        return proc

    def start_worker_command(
        self, processes: int, concurrency: int = 2, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """``rewardrelay worker`` as the Procfile runs it (the threads pool), with
        ``WORKER_PROCESSES=processes``; returns once every process said "ready."."""
        name = name or f"wc{len(self.workers)}-{self.prefix}"
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewardrelay.cli", "worker", "--name", name],
            env={**self.env, "WORKER_PROCESSES": str(processes),
                 "WORKER_CONCURRENCY": str(concurrency)},
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.workers.append(proc)
        self._wait_worker_ready(name, count=processes)
        return proc

    def _wait_worker_ready(self, name: str, timeout: float = 30, count: int = 1) -> None:
        deadline = time.time() + timeout
        path = self.tmp / f"{name}.log"
        while time.time() < deadline:
            if path.read_bytes().count(b"ready.") >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"worker {name} not ready:\n{path.read_text()[-3000:]}")

    def start_beat(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp / "beat.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "beat",
                "-l",
                "info",
                "-s",
                str(self.tmp / "beat-schedule"),
            ],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def kill_workers(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.workers.clear()

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def stop(self) -> None:
        self._stop.set()
        self.kill_workers()
        if self._edge is not None:
            self._edge.shutdown()
        if self._relay is not None:
            self._relay.join(timeout=5)
        self.http.close()

    # actions ---------------------------------------------------------------------------
    def send(self, event: dict[str, Any], *, source: str = "coniq") -> httpx.Response:
        raw = json.dumps(event).encode()
        path, secret = (
            ("/webhooks/coniq", TEST_CONIQ_SECRET)
            if source == "coniq"
            else ("/events", TEST_EVENT_SECRET)
        )
        # signed_headers sets content-type already; a second Content-Type is a malformed
        # request that gunicorn (unlike werkzeug's server) refuses with 400.
        headers = signed_headers(raw, secret, event["id"])
        return self.http.post(self.edge_url + path, content=raw, headers=headers)

    def fulfillment(self, event_id: str) -> dict[str, Any]:
        response = self.http.get(
            f"{self.edge_url}/fulfillments/{event_id}",
            headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"},
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_terminal(self, event_id: str, timeout: float = 30) -> dict[str, Any]:
        """Poll until every unit is terminal; returns the fulfillment view."""
        deadline = time.time() + timeout
        view: dict[str, Any] = {}
        while time.time() < deadline:
            view = self.fulfillment(event_id)
            if view["units"] and all(u["state"] in TERMINAL_STATES for u in view["units"]):
                return view
            time.sleep(0.1)
        raise AssertionError(
            f"event {event_id} not terminal after {timeout}s: {view}\n{self.worker_logs()[-4000:]}"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def sandboxes_running(redis_available: None) -> Iterator[tuple[Any, Any]]:
    ifg = serve_in_thread(
        ifeelgoods_app(api_key=IFG_KEY, api_secret=IFG_SECRET), log_requests=False
    )
    rops = serve_in_thread(
        rewardops_app(client_id=ROPS_ID, client_secret=ROPS_SECRET), log_requests=False
    )
    yield ifg, rops
    ifg.stop()
    rops.stop()


@pytest.fixture
def ifeelgoods(sandboxes_running: tuple[Any, Any]) -> Iterator[SandboxControl]:
    with SandboxControl(sandboxes_running[0].url) as control:
        control.reset()
        yield control
        control.reset()


@pytest.fixture
def rewardops(sandboxes_running: tuple[Any, Any]) -> Iterator[SandboxControl]:
    with SandboxControl(sandboxes_running[1].url) as control:
        control.reset()
        control.configure(delivery_delay=0.3)
        yield control
        control.reset()


def _drop_keys(settings: Settings) -> None:
    """Remove every key this stack wrote under its prefix (the tests share db 15)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for key in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


def _drop_queue(settings: Settings) -> None:
    """Remove this stack's broker queue (and, on Redis, kombu's binding keys)."""
    queue = settings.task_queue
    if settings.celery_broker_url.startswith("amqp"):
        app = make_celery(settings)
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
                conn.default_channel.queue_delete(queue)
        except Exception:  # noqa: BLE001 - best-effort cleanup of a test queue
            pass
        return
    client = redis.Redis.from_url(settings.celery_broker_url)
    try:
        # The queue list, and kombu's binding keys for it (``_kombu.binding*.{queue}``).
        client.delete(queue, *client.scan_iter(match=f"_kombu.binding*.{queue}", count=1000))
    finally:
        client.close()


@pytest.fixture
def make_stack(
    tmp_path: Path,
    sandboxes_running: tuple[Any, Any],
    ifeelgoods: SandboxControl,
    rewardops: SandboxControl,
) -> Iterator[Any]:
    """Start a stack with extra environment (e.g. SENTRY_DSN); stopped at teardown.

    ``web="gunicorn"`` runs the receiver as its own gunicorn processes instead of a thread
    of the test process (metrics and log tests need real, separate web processes).
    """
    started: list[Stack] = []

    def start(
        extra_env: dict[str, str] | None = None,
        *,
        worker: bool = True,
        relay: bool = True,
        broker: str = "redis",
        web: str = "thread",
    ) -> Stack:
        env = dict(extra_env or {})
        if broker == "amqp":
            env["CELERY_BROKER_URL"] = AMQP_URL
        running = Stack(tmp_path, sandboxes_running[0].url, sandboxes_running[1].url, env)
        if broker == "amqp":
            _purge_amqp(running.settings)
        started.append(running)
        if web == "gunicorn":
            running.start_web_process()
        else:
            running.start_edge()
        if relay:
            running.start_relay()
        if worker:
            running.start_worker()
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()
            _drop_queue(running.settings)
            _drop_keys(running.settings)


def _purge_amqp(settings: Settings) -> None:
    """Start from an empty queue: earlier runs may have left messages in RabbitMQ."""
    app = make_celery(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            app.control.purge(connection=conn)
    except OSError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"RabbitMQ not reachable: {exc}")


@pytest.fixture(params=["redis", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def stack(request: pytest.FixtureRequest, make_stack: Any) -> Stack:
    """The stack on each supported broker: Redis, and RabbitMQ for users who outgrow it."""
    result: Stack = make_stack(broker=request.param)
    result.broker = request.param
    return result


__all__ = ["Stack", "coniq_reward", "internal_grant", "new_event_id", "replace"]
