"""Provider clients, optimistic concurrency: read → decide → write with If-Match, bounded.

Stage: fulfilment (worker side). Ifeelgoods guards state changes with a resource ``version``
and answers 412 when ours is stale (providers.md 1.8). The right reaction is never a blind
resend: re-read, let the caller decide again (another worker may already have redeemed the
redemption, in which case we are done and take its codes), and only then write with the
fresh version. This module is that loop, kept separate from HTTP so it is easy to test.

Usage::

    def decide(r: Redemption) -> Done[Redemption] | Write:
        if r.state is RedemptionState.REDEEMED:
            return Done(r)                      # someone else finished it: take the codes
        if r.state is not RedemptionState.PENDING:
            raise PermanentProviderError(...)   # canceled/denied: nothing to do
        return WRITE

    redemption = update_with_if_match(
        read=lambda: client.get_redemption(rid),
        decide=decide,
        write=lambda r: client.redeem(r.id, user, version=r.version),
    )
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tasks.http.errors import PreconditionFailedError, VersionConflictError

__all__ = ["WRITE", "Decision", "Done", "Write", "update_with_if_match"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3  # providers.md 1.8 [DESIGN]: cap If-Match retries at 3, then dead-letter


@dataclass(frozen=True)
class Done(Generic[T]):
    """Stop without writing; ``value`` is the result (e.g. the already-redeemed resource)."""

    value: T


@dataclass(frozen=True)
class Write:
    """Go ahead and write, using the version of the snapshot just decided on."""


WRITE = Write()

Decision = Done[T] | Write


def update_with_if_match(
    *,
    read: Callable[[], T],
    decide: Callable[[T], Done[T] | Write],
    write: Callable[[T], T],
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    current: T | None = None,
    provider: str = "ifeelgoods",
) -> T:
    """Apply a conditional write, re-reading and re-deciding after each 412.

    Args:
        read: fetch a fresh snapshot (carrying its version).
        decide: look at a snapshot; return ``Done(value)`` to stop or ``WRITE`` to write.
            May raise (e.g. a permanent error when the resource is canceled).
        write: perform the conditional write from a snapshot (``If-Match`` = its version).
        max_attempts: writes tried before giving up.
        current: a snapshot the caller already holds; saves the first read.
        provider: names the provider in the exhaustion error.

    Returns:
        The result of ``decide`` (``Done``) or of the successful ``write``.

    Raises:
        VersionConflictError: every write attempt met a newer version.
        ProviderError: whatever ``read``/``decide``/``write`` raise besides 412.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    snapshot = read() if current is None else current
    last: PreconditionFailedError | None = None
    for attempt in range(1, max_attempts + 1):
        decision = decide(snapshot)
        if isinstance(decision, Done):
            return decision.value
        try:
            return write(snapshot)
        except PreconditionFailedError as exc:
            last = exc
            logger.info(
                "version conflict on attempt %d/%d; re-reading",
                attempt,
                max_attempts,
                extra={"provider": provider, "attempt": attempt},
            )
            if attempt < max_attempts:
                snapshot = read()
    raise VersionConflictError(
        provider, "version_conflict_exhausted", status_code=last.status_code if last else None
    ) from last
