"""``rewardrelay connect orders-platform``: the one-time OAuth2 authorization-code flow.

Stage: operator tooling, run once per deployment. The orders platform grants access only
on behalf of a user (providers.md 5.1 [SEED 001]): the operator opens the consent URL this
command prints, the platform redirects the browser to ``ORDERS_REDIRECT_URI`` with a
one-time ``code``, and a short-lived listener on that loopback address receives it. The
code is exchanged at once; the refresh token goes to Redis, where the poller finds and
rotates it. The code and the tokens are never printed or logged.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import redis

from tasks.http.errors import ProviderError
from tasks.sources.clients.orders_platform import OrdersPlatformClient
from tasks.sources.common import SourceKeys
from tasks.sources.orders_platform import SOURCE, token_store
from worker.config import Settings, SettingsError
from worker.redis_connect import redis_client
from worker.stores.keys import Keys

__all__ = ["ConnectError", "connect_orders_platform"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CALLBACK_POLL_SECONDS = 0.2  # how often the listener checks for the deadline


class ConnectError(Exception):
    """The connect flow did not complete (the message says why, without any secret)."""


class _Callback:
    """What the redirect brought back (one request is enough)."""

    def __init__(self, path: str, state: str) -> None:
        self.path = path
        self.state = state
        self.code = ""
        self.error = ""
        self.done = threading.Event()


def _handler(callback: _Callback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            parts = urlsplit(self.path)
            if parts.path != callback.path:
                self._answer(404, "Not the redirect path.")
                return
            query = parse_qs(parts.query)
            state = (query.get("state") or [""])[0]
            if not secrets.compare_digest(state, callback.state):
                callback.error = "the redirect carried another state (not our request)"
            elif query.get("error"):
                callback.error = f"the platform refused: {query['error'][0][:100]}"
            elif not (query.get("code") or [""])[0]:
                callback.error = "the redirect carried no code"
            else:
                callback.code = query["code"][0]
            callback.done.set()
            ok = not callback.error
            self._answer(
                200 if ok else 400,
                "Connected. You can close this window."
                if ok
                else f"Not connected: {callback.error}.",
            )

        def _answer(self, status: int, message: str) -> None:
            body = message.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return  # the request line holds the one-time code: never log it

    return Handler


def connect_orders_platform(
    settings: Settings,
    *,
    on_url: Callable[[str], None],
    timeout: float = 300.0,
    listener: socket.socket | None = None,
) -> None:
    """Run the authorization-code flow once and store the refresh token in Redis.

    ``on_url`` receives the consent URL to open (the command prints it). ``listener`` is
    a socket already bound to the redirect address (``rewardrelay run`` holds one from
    the moment it picks the port, so nothing else can take it meanwhile); it is closed
    when the flow ends.

    Raises:
        SettingsError: the orders platform is not configured, or the redirect URI is not
            a loopback ``http`` URL this command can listen on.
        ConnectError: no redirect within ``timeout``, a foreign state, or the platform
            refused the code.
    """
    if not settings.orders_configured:
        raise SettingsError("ORDERS_CLIENT_ID", "and ORDERS_BASE_URL are required to connect")
    redirect = urlsplit(settings.orders_redirect_uri)
    if redirect.scheme != "http" or redirect.hostname not in LOOPBACK_HOSTS:
        raise SettingsError(
            "ORDERS_REDIRECT_URI", "must be an http://127.0.0.1:<port>/... URL to connect"
        )
    callback = _Callback(redirect.path or "/", secrets.token_urlsafe(16))
    try:
        address = (redirect.hostname or "127.0.0.1", redirect.port or 80)
        if listener is None:
            server = HTTPServer(address, _handler(callback))
        else:
            server = HTTPServer(address, _handler(callback), bind_and_activate=False)
            server.socket.close()
            server.socket = listener
            server.server_activate()
    except OSError as exc:
        raise ConnectError(f"cannot listen on {redirect.netloc}: {exc.strerror}") from None
    store = redis_client(settings.redis_url, socket_timeout=10)
    client = OrdersPlatformClient.from_settings(
        settings, token_store(store, SourceKeys(Keys(settings.key_prefix), SOURCE))
    )
    try:
        server.timeout = CALLBACK_POLL_SECONDS
        on_url(client.authorize_url(callback.state))
        deadline = time.monotonic() + timeout
        while not callback.done.is_set():
            if time.monotonic() > deadline:
                raise ConnectError(f"no redirect to {settings.orders_redirect_uri} in {timeout:g}s")
            server.handle_request()
        if callback.error:
            raise ConnectError(callback.error)
        try:
            client.exchange_code(callback.code)
        except ProviderError as exc:
            raise ConnectError(f"the platform refused the code: {exc.reason}") from None
        except redis.RedisError as exc:
            raise ConnectError(f"cannot store the refresh token: {type(exc).__name__}") from None
    finally:
        server.server_close()
        client.close()
        store.close()
