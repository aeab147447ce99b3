"""The attempt deadline: every outbound call of one fulfilment attempt ends before it.

Under Celery's prefork pool a hard time limit killed a stuck task; under the thread pool
(the worker's, for many provider calls in flight) nothing can kill a thread, so the bound
lives here. :func:`fulfil_unit` opens :func:`attempt_deadline` for the lease's span, and
:meth:`ProviderClient._send` caps each call's timeouts at the time left, refusing to send
once none is left. An attempt of many calls (look-up, create, If-Match redeems, a token
fetch) therefore ends within its lease: a second delivery of the unit (after the lease)
never overlaps a call of the first. A context variable, so each pool thread has its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import httpx

__all__ = ["attempt_deadline", "capped_timeout", "seconds_left"]

_deadline: ContextVar[float | None] = ContextVar("rewardrelay_attempt_deadline", default=None)


@contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Calls made inside end within ``seconds`` from now (a nested deadline can only shorten)."""
    until = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(until if outer is None else min(outer, until))
    try:
        yield
    finally:
        _deadline.reset(token)


def seconds_left() -> float | None:
    """Seconds until the current attempt's deadline; None outside an attempt."""
    until = _deadline.get()
    return None if until is None else until - time.monotonic()


def capped_timeout(timeout: httpx.Timeout, left: float) -> httpx.Timeout:
    """``timeout`` with each phase at most ``left`` seconds."""

    def cap(value: float | None) -> float:
        return left if value is None else min(value, left)

    return httpx.Timeout(
        connect=cap(timeout.connect),
        read=cap(timeout.read),
        write=cap(timeout.write),
        pool=cap(timeout.pool),
    )
