"""Redis connections: the one place a client is made from a URL (``REDIS_URL`` and the like).

Two kinds of URL reach here (parsed by ``worker.redis_url``). A plain ``redis://``,
``rediss://`` or ``unix://`` URL is what redis-py's ``from_url`` takes. A Sentinel URL
names the sentinels and the monitored service instead of a server, so a failover moves
every client to the new primary::

    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?sentinel_password=P]

``PASSWORD`` (and ``USER``) authenticate to the primary and replicas; the sentinels get
``sentinel_password`` when they have one of their own. The store's client is redis-py's
``Sentinel(...).master_for(SERVICE)``: each new connection asks the sentinels where the
primary is, and a connection to a demoted primary fails (``ReadOnlyError`` becomes a
``ConnectionError``) rather than writing to a replica. Each process also asks a sentinel
where the primary is at most every ``MASTER_CHECK_SECONDS`` before it sends on an open
connection, and reconnects when the answer moved: after an operator's ``SENTINEL
FAILOVER`` the old primary keeps accepting writes until the sentinels demote it (up to
ten seconds later), and every write it takes then is lost. The Celery broker gets the same
sentinels in kombu's form, ``sentinel://...;sentinel://...`` with ``master_name`` in the
transport options (``worker.redis_url.broker_connection``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from worker.redis_url import SENTINEL_SOCKET_TIMEOUT_SECONDS, is_sentinel_url, parse_sentinel_url

__all__ = ["MASTER_CHECK_SECONDS", "redis_client"]

# How stale a process's idea of the primary may be before a send checks it again.
MASTER_CHECK_SECONDS = 0.5


def redis_client(
    url: str,
    *,
    max_connections: int | None = None,
    pool_wait_seconds: float | None = None,
    **options: Any,
) -> redis.Redis:
    """A client of the store (or broker database) at ``url``; ``options`` are redis-py's
    connection options (timeouts, health checks) and apply to the primary's connections.

    ``max_connections`` bounds the pool (a worker's pool threads share one client): on a
    plain URL a thread then waits up to ``pool_wait_seconds`` for a free connection rather
    than opening more; behind Sentinel the bound is kept by redis-py's sentinel pool.
    """
    if not is_sentinel_url(url):
        if max_connections is None:
            return redis.Redis.from_url(url, **options)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_wait_seconds, **options
        )
        return redis.Redis(connection_pool=pool)
    if max_connections is not None:
        options["max_connections"] = max_connections
    parts = parse_sentinel_url(url)
    sentinel_options: dict[str, Any] = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_SECONDS}
    if parts.sentinel_password:
        sentinel_options["password"] = parts.sentinel_password
    sentinel = Sentinel(list(parts.sentinels), sentinel_kwargs=sentinel_options)
    client: redis.Redis = sentinel.master_for(
        parts.service,
        connection_pool_class=_FollowingPool,
        db=parts.db,
        username=parts.username,
        password=parts.password,
        **options,
    )
    return client


class _MasterWatch:
    """The primary's address as the sentinels last said, asked at most every
    ``MASTER_CHECK_SECONDS`` (shared by one client's connections)."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._address: tuple[str, int] | None = None

    def current(self) -> tuple[str, int] | None:
        now = time.monotonic()
        if now - self._checked_at < MASTER_CHECK_SECONDS:
            return self._address
        with self._lock:
            if now - self._checked_at >= MASTER_CHECK_SECONDS:
                self._checked_at = now
                try:
                    host, port = self._proxy.get_master_address()
                    self._address = (str(host), int(port))
                except redis.RedisError:
                    pass  # no sentinel answers: keep using the primary we know
        return self._address

    def learned(self, address: tuple[str, int]) -> None:
        """A connection just asked the sentinels itself: that answer is the newest."""
        with self._lock:
            self._checked_at = time.monotonic()
            self._address = (str(address[0]), int(address[1]))


class _FollowingConnection(SentinelManagedConnection):
    """A connection to the primary that moves when the sentinels name another one."""

    def __init__(self, **kwargs: Any) -> None:
        self._watch: _MasterWatch = kwargs.pop("master_watch")
        self._connecting = False
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def connect_to(self, address: tuple[str, int]) -> None:
        self._watch.learned(address)
        self._connecting = True  # the handshake's own commands (HELLO, SELECT) go through
        try:
            super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self._connecting = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._connecting:
            if self._sock is not None:
                primary = self._watch.current()
                if primary is not None and primary != (str(self.host), int(self.port)):
                    self.disconnect()
            if self._sock is None:
                # Through the sentinels: redis-py's own reconnect here would dial the
                # address this connection last had, which may be the demoted primary.
                self.connect()  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class _FollowingPool(SentinelConnectionPool):
    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        kwargs.setdefault("connection_class", _FollowingConnection)
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.connection_kwargs["master_watch"] = _MasterWatch(self.proxy)
