"""Retry policy: exponential backoff with full jitter, honouring Retry-After, bounded.

Delays are kept in the ledger (``next_attempt_at``), never as broker countdowns, so a long
wait cannot outlive Redis's visibility timeout or RabbitMQ's consumer timeout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.config import Settings

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    max_delay_seconds: float
    max_attempts: int
    horizon_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base_seconds=settings.retry_base_seconds,
            max_delay_seconds=settings.retry_max_delay_seconds,
            max_attempts=settings.retry_max_attempts,
            horizon_seconds=settings.retry_horizon_seconds,
        )

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after ``attempt`` (1-based) failed: uniform in [0, capped exp]."""
        # The exponent is capped so a huge attempt count cannot overflow the float.
        ceiling = min(
            self.max_delay_seconds, self.base_seconds * 2.0 ** min(max(0, attempt - 1), 62)
        )
        delay = (rng or random).uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def exhausted(self, round_attempts: int, first_attempt_at: float, retry_at: float) -> bool:
        """True when another attempt would exceed the attempt count or the time horizon."""
        if round_attempts >= self.max_attempts:
            return True
        return first_attempt_at > 0 and retry_at - first_attempt_at > self.horizon_seconds
