"""The broker check behind ``/readyz`` and ``rewardrelay_broker_up``: one client per app.

A probe every few seconds from each load balancer, plus every metrics scrape, must not
open (and tear down) a broker connection each time; ``BrokerProbe`` keeps one between
checks, shared by gunicorn's threads. Its own module so that the edge's context can hold
one without importing the health blueprint.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.redis_connect import redis_client

__all__ = ["BROKER_CHECK_TIMEOUT_SECONDS", "BROKER_PROBE_CLIENT_NAME", "BrokerProbe"]

log = logging.getLogger(__name__)

# Longest the readiness probe waits for the broker (probes usually time out at 5 s).
BROKER_CHECK_TIMEOUT_SECONDS = 2.0
# Connections the probe keeps to a Redis broker: concurrent checks beyond this wait (at
# most the check timeout) for one instead of opening more.
BROKER_PROBE_CONNECTIONS = 2
BROKER_PROBE_CLIENT_NAME = "rewardrelay-readyz"  # its name in the broker's CLIENT LIST
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")


class BrokerProbe:
    """Answers "does the broker answer now?" over a connection kept between checks.

    A Redis broker (plain or Sentinel URL) gets a small bounded redis-py pool named
    ``rewardrelay-readyz``, with PING under socket timeouts and no retries. Any other
    broker (RabbitMQ) gets one kombu connection guarded by a lock, checked with a passive
    declare of ``amq.direct`` (a real round trip) and dropped after a failure, so the next
    check reconnects. Every check ends within about ``timeout`` seconds.
    """

    def __init__(self, celery: Any, broker_url: str, *, timeout: float) -> None:
        self._celery = celery
        self._timeout = timeout
        self._lock = threading.Lock()
        self._connection: Any = None  # kombu.Connection, for non-Redis brokers
        self._redis: redis.Redis | None = None
        if broker_url.startswith(REDIS_SCHEMES):
            self._redis = redis_client(
                broker_url,
                max_connections=BROKER_PROBE_CONNECTIONS,
                pool_wait_seconds=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                client_name=BROKER_PROBE_CLIENT_NAME,
            )

    def status(self) -> str:
        """``ok`` or ``unavailable``."""
        try:
            if self._redis is not None:
                self._redis.ping()
            else:
                self._check_kombu()
        # Kombu raises transport-specific errors (OperationalError, socket errors, redis
        # errors); every one of them means the same thing here: the broker is not usable.
        except Exception as exc:  # noqa: BLE001
            log.warning("readiness: broker %s", type(exc).__name__)
            return "unavailable"
        return "ok"

    def _check_kombu(self) -> None:
        if not self._lock.acquire(timeout=self._timeout):
            raise TimeoutError("another broker check is still waiting for an answer")
        try:
            if self._connection is None:
                connection = self._celery.connection_for_write(
                    connect_timeout=self._timeout,
                    transport_options={
                        "read_timeout": self._timeout,
                        "write_timeout": self._timeout,
                    },
                )
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=self._timeout
                )
                self._connection = connection
            try:
                self._connection.default_channel.exchange_declare(
                    exchange="amq.direct", type="direct", passive=True
                )
            except Exception:
                self._drop()
                raise
        finally:
            self._lock.release()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        try:
            connection.collect()  # frees the transport without talking to the broker
        except Exception:  # noqa: BLE001 - already broken; nothing left to free
            log.debug("readiness: broker connection already gone")

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._drop()
        if self._redis is not None:
            self._redis.close()
