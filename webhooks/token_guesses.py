"""Wrong admin tokens, limited per client address: one limit for every door to the token.

The console's sign-in form and the admin API's bearer header both take ``ADMIN_TOKEN``,
so both count wrong tokens in the same fixed window in Redis (``GUESSES`` per
``WINDOW_SECONDS`` per address); beyond it they answer 429 with Retry-After. A guess is
counted before the token is compared (one atomic INCR), so parallel guesses cannot slip
past the limit, and a right token is taken back, so it never counts. The address is the
peer's: behind a proxy, a deployment must pass the client address through (e.g.
werkzeug's ``ProxyFix``), or every client shares the proxy's limit.
"""

from __future__ import annotations

import time

from flask import request

from webhooks.context import edge_context

__all__ = ["GUESSES", "WINDOW_SECONDS", "count_guess", "guesses_key", "take_back_guess"]

GUESSES = 10  # wrong tokens one address may send per window
WINDOW_SECONDS = 300


def guesses_key() -> str:
    """This request's address's counter for the current fixed window."""
    window = int(time.time()) // WINDOW_SECONDS
    address = request.remote_addr or "unknown"
    return f"{edge_context().keys.prefix}:admin-token:guesses:{address}:{window}"


def count_guess(key: str) -> int:
    """Count one attempt under ``key``; seconds to wait when over the limit, else 0.

    (SET NX EX, not EXPIRE NX: the embedded Redis is 6.2.)

    Raises:
        redis.RedisError: the store is down (callers answer 503).
    """
    pipe = edge_context().redis.pipeline()
    pipe.set(key, 0, ex=WINDOW_SECONDS, nx=True)
    pipe.incr(key)
    _, attempts = pipe.execute()
    if int(attempts) <= GUESSES:
        return 0
    return WINDOW_SECONDS - int(time.time()) % WINDOW_SECONDS


def take_back_guess(key: str) -> None:
    """A right token does not count against the address (only guesses do)."""
    pipe = edge_context().redis.pipeline()
    pipe.set(key, 0, ex=WINDOW_SECONDS, nx=True)
    pipe.decr(key)
    pipe.execute()
