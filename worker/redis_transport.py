"""kombu's Redis transport, publishing through one client per channel instead of one per message.

kombu 5.7's Redis ``Channel.conn_or_acquire()`` builds a new ``redis.Redis`` for every
plain publish, every task event and every acknowledgement (``_create_client()`` on each
call); the connection comes from the channel's pool either way, so the new client buys
nothing: constructing it (response callbacks, connection kwargs, encoder) is pure CPU,
measured at about a fifth of an event publish's cost on loopback. A Celery worker that
sends task events publishes two or three of them per task, from the thread that ran it.

Here the channel keeps one client per pool and hands it out. ``redis.Redis`` over a
``ConnectionPool`` is safe to share between threads (each command checks out its own
connection); when kombu replaces the pool (after a fork, after ``close()``) the next call
builds a client for the new one. Nothing else of the transport changes, and
``broker_transport = "worker.redis_transport:Transport"`` selects it (``make_celery``
does, for ``redis://``/``rediss://``/``unix://`` brokers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]


class Channel(kombu_redis.Channel):
    """A Redis channel whose plain (non-pipelined, non-BRPOP) calls share one client."""

    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()  # type: ignore[no-untyped-call]
        yield shared


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
