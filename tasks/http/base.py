"""HTTP clients, base: one place for HTTP I/O, timeouts and error classification.

Shared by the reward providers (:mod:`tasks.providers`) and the reward sources' clients
(:mod:`tasks.sources.clients`). Every outbound call goes through
:meth:`ProviderClient._send`, the only ``try/except`` around network I/O, and every non-2xx
response goes through :func:`error_from_response`, the only status-code mapping
(providers.md section 6). Vendor modules add auth, paths and response schemas on top. A
write whose result is unknown (read timeout, connection reset after sending, 5xx) becomes
:class:`UnknownOutcomeError`, so the caller looks the order up before resubmitting.
The OAuth2 token cache lives next door, in :mod:`tasks.http.oauth`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import quote

import httpx

from tasks.http.deadline import capped_timeout, seconds_left
from tasks.http.errors import (
    ConflictError,
    NotFoundError,
    PermanentProviderError,
    PreconditionFailedError,
    ProviderAuthError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
    UnknownOutcomeError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "ProviderClient",
    "error_from_response",
    "parse_retry_after",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)  # seconds; read/write/pool 10, connect 3
# A call is not started with less than this left before the attempt's deadline.
MIN_CALL_SECONDS = 0.05
# Connections per client (httpx's default keeps only 20 alive): see ``pool_size``.
DEFAULT_POOL_SIZE = 100
CONNECT_RETRIES = 1  # httpx retries only connection failures; Celery owns every other retry
MAX_RETRY_AFTER_SECONDS = 3600.0  # ignore absurd Retry-After values instead of sleeping a day
USER_AGENT = "rewardrelay/0.1 (+https://github.com/rewardrelay)"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_PERMANENT_REASONS = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    Returns None when absent or unparseable; clamps to ``[0, MAX_RETRY_AFTER_SECONDS]``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def error_from_response(
    provider: str,
    response: httpx.Response,
    *,
    write: bool,
    name: str | None = None,
    detail: str | None = None,
    reload_conflicts: frozenset[str] = frozenset(),
) -> ProviderError:
    """Map a non-2xx response to the error tree (providers.md section 6).

    ``name`` is the provider's own error name when the vendor module could read one
    (Ifeelgoods ``error_name``, RewardOps ``reason``); it becomes the ``reason`` slug.
    ``write`` marks a non-idempotent call: then a 5xx means the outcome is unknown.
    ``reload_conflicts`` lists 409 error names that mean "modified meanwhile, reload and
    resubmit" (Ifeelgoods ``conflict``); they map to :class:`PreconditionFailedError`.
    """
    status = response.status_code
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimitedError(
            provider,
            name or "rate_limited",
            status_code=status,
            detail=detail,
            retry_after=retry_after,
        )
    if status >= 500:
        reason = name or f"http_{status}"
        if write:
            return UnknownOutcomeError(provider, reason, status_code=status, detail=detail)
        return TransientProviderError(provider, reason, status_code=status, detail=detail)
    if status == 408:
        return TransientProviderError(provider, name or "request_timeout", status_code=status)
    if status in (401, 403):
        default = "unauthorized" if status == 401 else "forbidden"
        return ProviderAuthError(provider, name or default, status_code=status, detail=detail)
    if status == 404:
        return NotFoundError(provider, name or "not_found", status_code=status, detail=detail)
    if status == 412 or (status == 409 and name is not None and name in reload_conflicts):
        return PreconditionFailedError(
            provider, name or "precondition_failed", status_code=status, detail=detail
        )
    if status == 409:
        return ConflictError(provider, name or "conflict", status_code=status, detail=detail)
    reason = name or _PERMANENT_REASONS.get(status, f"http_{status}")
    return PermanentProviderError(provider, reason, status_code=status, detail=detail)


class ProviderClient:
    """Owns base URL, the ``httpx.Client`` and timeouts; subclasses add auth and schemas.

    Pass ``http`` to share a client per worker process or to inject a transport in tests;
    otherwise one is created with ``HTTPTransport(retries=1)`` (connect errors only) and
    ``pool_size`` keep-alive connections, and closed by :meth:`close`. ``base_url``
    includes the API version prefix (``https://api.ifeelgoods.com/fulfillment/v2``).
    """

    provider: ClassVar[str] = "provider"
    # 409 error names meaning "reload and resubmit" rather than a permanent conflict.
    reload_conflicts: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._owns_http = http is None
        self._http = http or httpx.Client(
            # Keep-alive connections for every call a worker process has in flight
            # (WORKER_CONCURRENCY threads): none waits for a connection or reconnects.
            transport=httpx.HTTPTransport(
                retries=CONNECT_RETRIES,
                limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            ),
            timeout=self._timeout,
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    @staticmethod
    def _path(template: str, *segments: object) -> str:
        """Fill ``{}`` placeholders with URL-quoted segments (ids come from outside)."""
        return template.format(*(quote(str(segment), safe="") for segment in segments))

    def _describe_error(self, response: httpx.Response) -> tuple[str | None, str | None]:
        """Vendor hook: (error name, short detail) read from an error body, if any."""
        return None, None

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one request; return a 2xx response or raise a :class:`ProviderError`.

        ``idempotent`` defaults to "not a write method"; pass True for writes that are safe
        to repeat blindly (token requests), so their failures are plain transient errors.

        Raises:
            UnknownOutcomeError: a write was sent but no trustworthy answer came back.
            TransientProviderError: timeout, connection failure or 5xx on a safe call.
            ProviderError: any other non-2xx response, per :func:`error_from_response`.
        """
        write = (method.upper() in WRITE_METHODS) if idempotent is None else not idempotent
        timeout = self._timeout
        left = seconds_left()
        if left is not None:
            if left <= MIN_CALL_SECONDS:
                # Nothing is sent: the attempt's lease is (nearly) spent, the next one retries.
                raise TransientProviderError(self.provider, "attempt_deadline")
            timeout = capped_timeout(timeout, left)
        request_headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        request_headers.update(headers or {})
        try:
            response = self._http.request(
                method,
                f"{self._base_url}{path}",
                params=params,
                json=json,
                data=data,
                headers=request_headers,
                auth=auth,
                timeout=timeout,
            )
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the provider: safe to retry whatever the method.
            raise TransientProviderError(self.provider, "connect_timeout") from exc
        except httpx.TimeoutException as exc:
            if write:
                raise UnknownOutcomeError(self.provider, "timeout") from exc
            raise TransientProviderError(self.provider, "timeout") from exc
        except httpx.ConnectError as exc:
            raise TransientProviderError(self.provider, "connect_error") from exc
        except httpx.TransportError as exc:
            # Read/write errors and protocol errors happen after the request left us.
            if write:
                raise UnknownOutcomeError(self.provider, "connection_error") from exc
            raise TransientProviderError(self.provider, "connection_error") from exc
        if response.is_success:
            return response
        name, detail = self._describe_error(response)
        error = error_from_response(
            self.provider,
            response,
            write=write,
            name=name,
            detail=detail,
            reload_conflicts=self.reload_conflicts,
        )
        logger.debug(
            "%s %s failed: %s",
            self.provider,
            method.upper(),
            error.reason,
            extra={"provider": self.provider, "status_code": error.status_code},
        )
        raise error

    def _parse(self, response: httpx.Response, parser: Callable[[Any], T], *, write: bool) -> T:
        """Decode JSON and validate it with ``parser`` (a vendor schema function).

        Raises:
            UnknownOutcomeError: a write's answer is unreadable (it may have succeeded).
            TransientProviderError: a read's answer is unreadable.
        """
        try:
            return parser(response.json())
        except (KeyError, TypeError, ValueError) as exc:
            error_type = UnknownOutcomeError if write else TransientProviderError
            raise error_type(
                self.provider, "invalid_response", status_code=response.status_code
            ) from exc

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"
