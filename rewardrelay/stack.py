"""``rewardrelay run``: the whole stack on one machine, on embedded defaults.

What is not configured is provided: an embedded Redis (``REDIS_URL`` unset), the provider
sandboxes (``IFEELGOODS_API_KEY`` / ``REWARDOPS_CLIENT_ID`` unset), the reward-source
sandboxes (``IGNICO_CLIENT_ID`` / ``ORDERS_CLIENT_ID`` / ``CONIQ_API_KEY`` unset), and
generated secrets and admin token (from the local data directory). Then the production
processes of the ``Procfile`` run as children with that environment: web (gunicorn),
worker (``rewardrelay worker``: ``WORKER_PROCESSES`` celery workers), beat, relay and
Flower. Their output is printed prefixed with their name.

The supervisor stops everything on Ctrl-C or SIGTERM (SIGTERM, then SIGKILL after a
timeout; Redis last), and stops everything with a non-zero exit when a child dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

import httpx

from rewardrelay.datadir import PROVIDER_VARIABLES, DataDir
from rewardrelay.embedded import (
    EmbeddedRedis,
    EmbeddedRedisError,
    die_with_parent,
    free_port,
    port_open,
)
from worker.config import Settings, SettingsError

__all__ = ["run_stack", "StackError", "DEFAULT_PORT", "DEFAULT_FLOWER_PORT"]

DEFAULT_PORT = 8000
DEFAULT_FLOWER_PORT = 5555
# How long the receiver may take to answer /healthz after the processes were started.
READY_TIMEOUT_SECONDS = 60.0
# How long a sandbox may take to listen.
SANDBOX_START_TIMEOUT_SECONDS = 15.0
# Grace period after SIGTERM before a child's whole process group gets SIGKILL. Celery's
# warm shutdown waits for running tasks (late acks make a killed task run again safely).
STOP_TIMEOUT_SECONDS = 20.0
# How often the supervisor looks at its children.
SUPERVISE_INTERVAL_SECONDS = 0.2
SANDBOX_BASE_PATHS = {
    "ifeelgoods": "/fulfillment/v2",
    "rewardops": "/api/v4",
    "ignico": "/api/v1",
    "orders-platform": "",
    "coniq": "",
}
# A sandbox runs when this variable is unset (reward providers, then reward sources).
SANDBOX_KEY_VARIABLE = {
    "ifeelgoods": "IFEELGOODS_API_KEY",
    "rewardops": "REWARDOPS_CLIENT_ID",
    "ignico": "IGNICO_CLIENT_ID",
    "orders-platform": "ORDERS_CLIENT_ID",
    "coniq": "CONIQ_API_KEY",
}
SANDBOX_URL_VARIABLE = {
    "ifeelgoods": "IFEELGOODS_BASE_URL",
    "rewardops": "REWARDOPS_BASE_URL",
    "ignico": "IGNICO_BASE_URL",
    "orders-platform": "ORDERS_BASE_URL",
    "coniq": "CONIQ_BASE_URL",
}
SANDBOX_URL_PLACEHOLDER = "http://127.0.0.1:1"  # validates settings before sandboxes listen
# The Coniq offer assigned when recording a reward back, under the Coniq sandbox.
SANDBOX_CONIQ_RECORD_OFFER_ID = "9001"


class StackError(RuntimeError):
    """The stack could not start; ``str()`` says why in one line."""


@dataclass
class Child:
    """One supervised process and the thread that prints its output."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None
    expected_exit: bool = field(default=False)
    # The environment when it differs from the stack's (Flower's).
    env: dict[str, str] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Console:
    """Serialised, line-prefixed output of the supervisor and its children."""

    def __init__(self, stream: IO[str] | None = None, width: int = 10) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._width = width

    def line(self, name: str, text: str) -> None:
        with self._lock:
            self._stream.write(f"{name:>{self._width}} | {text}\n")
            self._stream.flush()

    def say(self, text: str) -> None:
        self.line("run", text)

    def pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.line(name, raw.decode(errors="replace").rstrip())
        stream.close()


def _gunicorn_extra_args() -> list[str]:
    """Options for this gunicorn version: no control socket (recent versions open one in
    the home directory by default, which two stacks would fight over; we supervise)."""
    try:
        from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - gunicorn is a declared dependency
        return []
    flags = {flag for setting in KNOWN_SETTINGS for flag in (setting.cli or [])}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


def _port_setting(env: Mapping[str, str], name: str, given: int | None, default: int) -> int:
    if given is not None:
        if not 1 <= given <= 65535:
            raise SettingsError(name, f"must be a port number from 1 to 65535, got {given}")
        return given
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise SettingsError(name, f"must be a port number from 1 to 65535, got {raw!r}")
    return int(raw)


class Stack:
    """The supervisor behind ``rewardrelay run``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        flower: bool = True,
        flower_port: int | None = None,
        environ: Mapping[str, str] | None = None,
        console: Console | None = None,
    ) -> None:
        self.env = dict(os.environ if environ is None else environ)
        self.data_dir = DataDir.from_env(self.env)
        self.port = _port_setting(self.env, "PORT", port, DEFAULT_PORT)
        self.flower = flower
        self.flower_port = _port_setting(self.env, "FLOWER_PORT", flower_port, DEFAULT_FLOWER_PORT)
        self.console = console or Console()
        self.redis: EmbeddedRedis | None = None
        self._redirect_listener: socket.socket | None = None
        self.sandboxes: list[Child] = []
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self._lock_handle: IO[str] | None = None
        self._recorded = False

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}"

    # start --------------------------------------------------------------------------
    def prepare(self) -> Settings:
        """Lock the data directory, fill in what is unset, and validate the result.

        Raises:
            StackError: the data directory is in use or a port is taken.
            SettingsError: a set variable is malformed.
            RulesError: the routing rules are invalid.
        """
        from tasks.routing import load_rules

        self.data_dir.ensure()
        self._lock()
        local = self.data_dir.secrets()
        for name in ("CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN", "CODE_KEYS"):
            if not self.env.get(name, "").strip():
                self.env[name] = local[name]
        for provider, key_variable in SANDBOX_KEY_VARIABLE.items():
            if not self.env.get(key_variable, "").strip():
                for variable in PROVIDER_VARIABLES[provider]:
                    self.env[variable] = local[variable]
                self.sandboxes.append(Child(provider, []))
        if self._runs("coniq"):
            self.env.setdefault("CONIQ_RECORD_OFFER_ID", SANDBOX_CONIQ_RECORD_OFFER_ID)
        if self._runs("orders-platform") and not self.env.get("ORDERS_REDIRECT_URI", "").strip():
            # The sandbox registers this redirect; a free port keeps parallel runs apart.
            # Held bound until the connect step listens on it: a port picked and released
            # here could be taken by another process before then.
            self._redirect_listener = socket.create_server(("127.0.0.1", 0))
            port = self._redirect_listener.getsockname()[1]
            self.env["ORDERS_REDIRECT_URI"] = f"http://127.0.0.1:{port}/callback"
        self.env["PORT"] = str(self.port)
        self.env["FLOWER_PORT"] = str(self.flower_port)
        # Sentry events from a local run are not production's (when a DSN is set at all).
        if not self.env.get("SENTRY_ENVIRONMENT", "").strip():
            self.env["SENTRY_ENVIRONMENT"] = "development"
        # The source pollers (beat) emit their reward events to this receiver.
        if not self.env.get("RECEIVER_URL", "").strip():
            self.env["RECEIVER_URL"] = self.receiver_url
        # Children print as they go, so their lines appear in order and at once.
        self.env["PYTHONUNBUFFERED"] = "1"
        self._metrics_dir()
        # Sandbox URLs are known once they listen (start()); validate with a stand-in.
        pending = {
            SANDBOX_URL_VARIABLE[s.name]: SANDBOX_URL_PLACEHOLDER
            for s in self.sandboxes
            if not self.env.get(SANDBOX_URL_VARIABLE[s.name], "").strip()
        }
        settings = Settings.from_env({**self.env, **pending})
        load_rules(settings.rules_file)
        busy = [self.port] + ([self.flower_port] if self.flower else [])
        for port in busy:
            if port_open(port):
                raise StackError(
                    f"port {port} on 127.0.0.1 is already in use "
                    f"(choose another with --port / --flower-port, or PORT / FLOWER_PORT)"
                )
        return settings

    def _metrics_dir(self) -> None:
        """One Prometheus multiprocess directory for web and worker, empty at each start,
        so ``/metrics`` sums every gunicorn worker and Celery child (unless already set)."""
        if self.env.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
            return
        directory = self.data_dir.path / "metrics"
        directory.mkdir(exist_ok=True, mode=0o700)
        for stale in directory.glob("*.db"):
            stale.unlink()
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)

    def _lock(self) -> None:
        handle = open(self.data_dir.lock_file, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StackError(
                f"another `rewardrelay run` is using {self.data_dir.path} "
                "(stop it, or set RR_DATA_DIR to another directory)"
            ) from None
        self._lock_handle = handle

    def start(self) -> None:
        """Start Redis, the sandboxes and the processes; wait until the receiver is up.

        Raises:
            StackError: something did not start (the message says what).
        """
        if not self.env.get("REDIS_URL", "").strip():
            self.redis = EmbeddedRedis(self.data_dir.path, die_with_parent=True)
            try:
                self.env["REDIS_URL"] = self.redis.start()
            except EmbeddedRedisError as exc:
                raise StackError(f"embedded Redis: {exc}") from None
            self.console.say(f"embedded Redis on {self.redis.url} (data in {self.redis.redis_dir})")
        for sandbox in self.sandboxes:
            self._start_sandbox(sandbox)
        if self._runs("orders-platform"):
            self._connect_orders_sandbox()
        self._record()
        python = sys.executable
        app = "worker.app"
        self.children += [
            Child(
                "web",
                [
                    python, "-m", "gunicorn", "-c", "python:webhooks.gunicorn_conf",
                    "-w", "2", "-b", f"127.0.0.1:{self.port}", *_gunicorn_extra_args(),
                    "webhooks:create_app()",
                ],
            ),
            # WORKER_PROCESSES Celery workers, rewardrelay-PORT-1@host and on.
            Child(
                "worker",
                [python, "-m", "rewardrelay.cli", "worker", "--name", f"rewardrelay-{self.port}"],
            ),
            Child(
                "beat",
                [
                    python, "-m", "celery", "-A", app, "beat", "-l", "info",
                    "-s", str(self.data_dir.beat_schedule),
                ],
            ),
            Child("relay", [python, "-m", "rewardrelay.cli", "relay"]),
        ]  # fmt: skip
        if self.flower:
            self.children.append(
                Child(
                    "flower",
                    [
                        python,
                        "-m",
                        "celery",
                        "-A",
                        app,
                        "flower",
                        f"--port={self.flower_port}",
                        "--address=127.0.0.1",
                    ],
                    env=self._flower_env(),
                )  # fmt: skip
            )
        for child in self.children:
            self._spawn(child)
        self._wait_ready()

    def _flower_env(self) -> dict[str, str]:
        """Flower on loopback: its HTTP API open without credentials, as its UI is (unless
        the user set Flower's own auth), and no Prometheus multiprocess directory, so its
        ``flower_*`` series stay on Flower's ``/metrics`` instead of the receiver's."""
        env = {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        if not any(env.get(name, "").strip() for name in ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")):
            env.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
        return env

    def _runs(self, sandbox: str) -> bool:
        return any(child.name == sandbox for child in self.sandboxes)

    def _connect_orders_sandbox(self) -> None:
        """Do what ``rewardrelay connect orders-platform`` does: the sandbox approves at once.

        A failure only prints a hint; the orders poller then reports "not connected".
        """
        from rewardrelay.connect import ConnectError, connect_orders_platform

        def approve(url: str) -> None:  # the operator's browser, following the redirect
            threading.Thread(
                target=lambda: httpx.get(url, follow_redirects=True, timeout=5.0),
                name="orders-consent",
                daemon=True,
            ).start()

        try:
            settings = Settings.from_env(self.env)
            listener, self._redirect_listener = self._redirect_listener, None
            connect_orders_platform(settings, on_url=approve, timeout=10.0, listener=listener)
        except (ConnectError, SettingsError) as exc:
            self.console.say(
                f"orders-platform sandbox not connected ({exc}); "
                "run `rewardrelay connect orders-platform`"
            )
            return
        self.console.say("orders-platform sandbox connected (refresh token in Redis)")

    def _start_sandbox(self, sandbox: Child) -> None:
        port = free_port()
        sandbox.argv = [
            sys.executable, "-m", "rewardrelay.cli", "sandbox", sandbox.name,
            "--port", str(port),
        ]  # fmt: skip
        self._spawn(sandbox)
        deadline = time.monotonic() + SANDBOX_START_TIMEOUT_SECONDS
        while not port_open(port):
            if not sandbox.alive or time.monotonic() > deadline:
                raise StackError(f"the {sandbox.name} sandbox did not start on port {port}")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}{SANDBOX_BASE_PATHS[sandbox.name]}"
        self.env[SANDBOX_URL_VARIABLE[sandbox.name]] = url
        self.console.say(f"{sandbox.name} sandbox on {url}")

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env if child.env is None else child.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C reaches only the supervisor, which stops the
            # children in order (and can kill a child's whole group if it hangs).
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only a prctl call, no locks
        )
        assert child.process.stdout is not None
        child.pump = threading.Thread(
            target=self.console.pump,
            args=(child.name, child.process.stdout),
            name=f"pump-{child.name}",
            daemon=True,
        )
        child.pump.start()

    def _record(self) -> None:
        self._recorded = True
        recorded = {
            "REDIS_URL",
            "PORT",
            "FLOWER_PORT",
            "RECEIVER_URL",
            "CONIQ_RECORD_OFFER_ID",
            "ORDERS_REDIRECT_URI",
            # What run chose for its children, so ``check`` reports that, not the default.
            "SENTRY_ENVIRONMENT",
        } | {SANDBOX_URL_VARIABLE[s.name] for s in self.sandboxes}
        self.data_dir.write_stack(
            {
                "pid": os.getpid(),
                "started_at": time.time(),
                "receiver_url": self.receiver_url,
                "flower_url": self.flower_url if self.flower else None,
                "sandboxes": [s.name for s in self.sandboxes],
                "env": {name: self.env[name] for name in sorted(recorded) if name in self.env},
            }
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        url = f"{self.receiver_url}/healthz"
        while True:
            dead = self.dead_child()
            if dead is not None:
                raise StackError(self._death_message(dead))
            if self.stop_requested.is_set():
                return
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(
                    f"the receiver did not answer {url} within {READY_TIMEOUT_SECONDS:g} s"
                )
            time.sleep(0.2)

    def banner(self) -> Iterator[str]:
        yield "rewardrelay is running"
        yield f"  receiver   {self.receiver_url}  (POST /webhooks/coniq, POST /events)"
        if self.flower:
            yield f"  flower     {self.flower_url}"
        if self.redis is not None:
            yield f"  redis      {self.redis.url}  (embedded)"
        for sandbox in self.sandboxes:
            yield f"  {sandbox.name:<10} {self.env[SANDBOX_URL_VARIABLE[sandbox.name]]}  (sandbox)"
        yield f"  data dir   {self.data_dir.path}  (secrets and admin token in settings.env)"
        yield "  try        rewardrelay send   then   rewardrelay status <event id> --wait 30"
        yield "Ctrl-C stops everything."

    # supervise ----------------------------------------------------------------------
    def dead_child(self) -> Child | None:
        for child in self.sandboxes + self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None

    @staticmethod
    def _death_message(child: Child) -> str:
        assert child.process is not None
        code = child.process.returncode
        how = f"signal {-code}" if code < 0 else f"code {code}"
        return f"{child.name} exited unexpectedly ({how}); stopping everything"

    def supervise(self) -> int:
        """Block until a stop is requested (0) or a child dies (1)."""
        while not self.stop_requested.wait(SUPERVISE_INTERVAL_SECONDS):
            dead = self.dead_child()
            if dead is not None:
                self.console.say(self._death_message(dead))
                return 1
        return 0

    # stop ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the processes, then the sandboxes they call, then Redis they all use."""
        self._terminate(self.children)
        self._terminate(self.sandboxes)
        if self._redirect_listener is not None:
            self._redirect_listener.close()
            self._redirect_listener = None
        if self.redis is not None and self.redis.running:
            self.console.say("stopping embedded Redis")
            self.redis.stop()
        if self._recorded:
            self.data_dir.clear_stack()
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _terminate(self, children: list[Child]) -> None:
        running = [c for c in children if c.alive]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.console.say(
                    f"{child.name} did not stop in {STOP_TIMEOUT_SECONDS:g} s; killing it"
                )
        for child in children:
            if child.process is None:
                continue
            # The leader has gone (or is hung): kill whatever is left of its group, e.g.
            # pool processes of a worker that was itself killed.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
            if child.pump is not None:
                child.pump.join(timeout=2)


def run_stack(
    *, port: int | None = None, flower: bool = True, flower_port: int | None = None
) -> int:
    """``rewardrelay run``: 0 after Ctrl-C/SIGTERM, 1 when something failed.

    Raises:
        SettingsError: a set variable is malformed (the caller prints it, exit 2).
    """
    from tasks.routing import RulesError

    stack = Stack(port=port, flower=flower, flower_port=flower_port)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if not stack.stop_requested.is_set():
            stack.console.say(f"{signal.Signals(signum).name}: stopping")
        stack.stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.prepare()
        except RulesError as exc:
            sys.stderr.write(f"rewardrelay: invalid rules: {exc}\n")
            return 2
        stack.start()
        if stack.stop_requested.is_set():
            return 0
        for text in stack.banner():
            stack.console.say(text)
        return stack.supervise()
    except StackError as exc:
        stack.console.say(f"cannot run: {exc}")
        return 1
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
