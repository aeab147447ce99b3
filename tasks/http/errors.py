"""HTTP clients, errors: the typed error tree every provider or source call raises.

Used by the fulfilment stage and the reward sources (worker side). The task layer decides
retry versus dead-letter purely from the exception class, so the classification made once
in ``base.error_from_response`` and the transport handler is the whole retry policy input
(providers.md section 6):

    ProviderError
    ├── TransientProviderError        retry with the same idempotency key
    │   ├── RateLimitedError          429; ``retry_after`` seconds when the provider said
    │   └── UnknownOutcomeError       a write may have been committed: look up first
    ├── PermanentProviderError        dead-letter, no retry
    │   ├── ProviderAuthError         401/403 (after any token refresh)
    │   ├── NotFoundError             404
    │   ├── ConflictError             409 user_mismatch / conflict_uniqueness / duplicate
    │   └── VersionConflictError      If-Match attempts exhausted
    └── PreconditionFailedError       412 (or 409 ``conflict``): re-read and re-decide

Messages carry only the provider, a short ``reason`` slug and the status code, never a
response body, header, secret or reward code, so they are safe for logs, metrics, Sentry and
dead-letter listings. ``detail`` holds a short provider message for operators.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ConflictError",
    "NotFoundError",
    "PermanentProviderError",
    "PreconditionFailedError",
    "ProviderAuthError",
    "ProviderError",
    "RateLimitedError",
    "TransientProviderError",
    "UnknownOutcomeError",
    "VersionConflictError",
    "safe_reason",
]

MAX_REASON_LENGTH = 48  # metric label cardinality guard
MAX_DETAIL_LENGTH = 200  # enough for a validation message, too short for a payload dump
_UNSAFE = re.compile(r"[^a-z0-9_]+")


def safe_reason(value: object, default: str = "error") -> str:
    """Turn a provider error name into a metrics-safe slug.

    ``Parameter Error`` → ``parameter_error``; empty → ``default``.
    """
    slug = _UNSAFE.sub("_", str(value).strip().lower()).strip("_")
    return slug[:MAX_REASON_LENGTH] or default


def _rebuild(cls: type[ProviderError], kwargs: dict[str, Any]) -> ProviderError:
    return cls(**kwargs)


class ProviderError(Exception):
    """Base of every provider failure.

    Attributes:
        provider: ``ifeelgoods`` or ``rewardops``.
        status_code: HTTP status, or None for transport failures.
        reason: short slug for metrics/logs (``timeout``, ``http_503``, ``user_mismatch``).
        detail: optional short provider message (truncated; not part of ``str(exc)``).
    """

    def __init__(
        self,
        provider: str,
        reason: str,
        *,
        status_code: int | None = None,
        detail: str | None = None,
    ) -> None:
        self.provider = provider
        self.reason = safe_reason(reason)
        self.status_code = status_code
        self.detail = detail[:MAX_DETAIL_LENGTH] if detail else None
        status = f" (HTTP {status_code})" if status_code is not None else ""
        super().__init__(f"{provider}: {self.reason}{status}")

    def _kwargs(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "reason": self.reason,
            "status_code": self.status_code,
            "detail": self.detail,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments break the default exception pickling Celery relies on.
        return (_rebuild, (type(self), self._kwargs()))


class TransientProviderError(ProviderError):
    """Retry later with the same idempotency key (timeouts, 5xx, 429)."""


class RateLimitedError(TransientProviderError):
    """429; ``retry_after`` is the provider's ``Retry-After`` in seconds, when given."""

    def __init__(
        self,
        provider: str,
        reason: str = "rate_limited",
        *,
        status_code: int | None = 429,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(provider, reason, status_code=status_code, detail=detail)
        self.retry_after = retry_after

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "retry_after": self.retry_after}


class UnknownOutcomeError(TransientProviderError):
    """A write was sent but its result is unknown (timeout, 5xx, reset after sending).

    The provider may have committed it: look the order up by its idempotency key before
    resubmitting.
    """


class PermanentProviderError(ProviderError):
    """Retrying cannot help (validation, unknown resource, refused operation)."""


class ProviderAuthError(PermanentProviderError):
    """Credentials rejected (401/403), after any token refresh the client could do."""


class NotFoundError(PermanentProviderError):
    """The promotion, reward, program, item or order does not exist (404)."""


class ConflictError(PermanentProviderError):
    """409 that re-sending cannot fix: ``user_mismatch``, ``conflict_uniqueness``."""


class PreconditionFailedError(ProviderError):
    """412: the ``If-Match`` version is stale; re-read, re-decide, retry with the new one."""


class VersionConflictError(PermanentProviderError):
    """Every If-Match attempt met a newer version; give up (dead-letter)."""
