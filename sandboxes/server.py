"""Sandboxes, serving: run a sandbox app as a real HTTP server (thread or foreground).

Stage: test infrastructure shipped with the package. Tests start sandboxes on loopback with
ephemeral ports through :func:`serve_in_thread`; the ``rewardrelay sandbox NAME --port N``
command runs one in the foreground through :func:`serve_forever`. Both use werkzeug's
threaded server, so a slow (fault-injected) request never blocks the others.
"""

from __future__ import annotations

import importlib
import logging
import threading
from types import TracebackType
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = [
    "SANDBOX_NAMES",
    "RunningServer",
    "create_sandbox_app",
    "serve_forever",
    "serve_in_thread",
]

# Each sandbox's module (``sandboxes.<name>``, dashes as underscores) and the credential
# options its ``create_app`` takes.
SANDBOX_OPTIONS: dict[str, tuple[str, ...]] = {
    "ifeelgoods": ("api_key", "api_secret"),
    "rewardops": ("client_id", "client_secret"),
    "ignico": ("client_id", "client_secret"),
    "orders-platform": ("client_id", "client_secret"),
    "coniq": ("api_key",),
}
SANDBOX_NAMES = tuple(SANDBOX_OPTIONS)
SHUTDOWN_POLL_SECONDS = 0.05  # how often the serving loop checks for stop(); keeps tests quick
logger = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not log each request line (keeps test output short)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class RunningServer:
    """A sandbox served from a daemon thread; stop it with :meth:`stop` or a ``with`` block."""

    def __init__(self, app: Flask, server: BaseWSGIServer, thread: threading.Thread) -> None:
        self.app = app
        self._server = server
        self._thread = thread
        self.host: str = server.host
        self.port: int = server.server_port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def state(self) -> Any:
        """The sandbox's in-memory state object (``IfeelgoodsState``/``RewardOpsState``)."""
        return self.app.extensions.get("sandbox_state")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer({self.app.name!r}, url={self.url!r})"


def serve_in_thread(
    app: Flask, host: str = "127.0.0.1", port: int = 0, *, log_requests: bool = True
) -> RunningServer:
    """Serve ``app`` from a daemon thread; ``port=0`` picks a free ephemeral port."""
    handler = WSGIRequestHandler if log_requests else _QuietHandler
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
        name=f"sandbox-{app.name}-{server.server_port}",
        daemon=True,
    )
    thread.start()
    return RunningServer(app, server, thread)


def create_sandbox_app(name: str, **creds: str | None) -> Flask:
    """Build the named sandbox app. Credentials: ``api_key``/``api_secret`` (Ifeelgoods),
    ``client_id``/``client_secret`` (RewardOps, Ignico, orders platform) or ``api_key``
    (Coniq); unset ones come from the environment.

    Raises:
        ValueError: unknown sandbox name or credential argument.
    """
    options = SANDBOX_OPTIONS.get(name)
    if options is None:
        raise ValueError(f"unknown sandbox {name!r}; choose one of {', '.join(SANDBOX_NAMES)}")
    unknown = set(creds) - set(options)
    if unknown:
        raise ValueError(f"unknown {name} sandbox option(s): {sorted(unknown)}")
    module = importlib.import_module(f"sandboxes.{name.replace('-', '_')}")
    app: Flask = module.create_app(**{option: creds.get(option) for option in options})
    return app


def serve_forever(name: str, host: str = "127.0.0.1", port: int = 0, **creds: str | None) -> None:
    """Run the named sandbox in the foreground until interrupted (``rewardrelay sandbox``).

    Raises:
        ValueError: unknown sandbox name or credential argument.
    """
    app = create_sandbox_app(name, **creds)
    server = make_server(host, port, app, threaded=True)
    logger.info("%s sandbox listening on http://%s:%d", name, host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
