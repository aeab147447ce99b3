"""OAuth2 access tokens: the one home of the client-credentials token cache.

:class:`ClientCredentialsClient` holds the cache (lock, expiry, invalidate-on-401 and retry
once) shared by RewardOps (a provider) and Ignico (a source); :class:`AccessToken` is also
what the orders platform's authorization-code client keeps.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from tasks.http.base import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, ProviderClient
from tasks.http.errors import ProviderAuthError
from tasks.http.redaction import Secret

__all__ = ["AccessToken", "ClientCredentialsClient"]


@dataclass(frozen=True)
class AccessToken:
    """A cached bearer token; the value stays a :class:`Secret` so reprs never show it."""

    value: Secret
    expires_at: float  # local epoch seconds, already reduced by the refresh margin


class ClientCredentialsClient(ProviderClient):
    """A provider client authenticated by OAuth2 client credentials (one shared token).

    Why one base: the token cache is security- and concurrency-sensitive, so it lives in
    one place. Thread-safe: a lock guards the cache so concurrent calls share one token
    request. Credentials are kept only as :class:`Secret`; subclasses say how to request
    (:meth:`_request_token`) and read (:meth:`_parse_token`) a token and which headers an
    authenticated call carries (:meth:`_auth_headers`).
    """

    display_name: ClassVar[str] = "Provider"  # used in the missing-credentials message
    default_refresh_margin: ClassVar[float] = 60.0  # seconds before expiry to refresh

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        refresh_margin: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError(f"{self.display_name} client_id and client_secret are required")
        super().__init__(base_url, http=http, timeout=timeout, pool_size=pool_size)
        self._client_id = client_id
        self._client_secret = Secret(client_secret)
        self._refresh_margin = (
            self.default_refresh_margin if refresh_margin is None else refresh_margin
        )
        self._clock = clock
        self._token_lock = threading.Lock()
        self._token: AccessToken | None = None
        # Log under the vendor module's logger, as before the token code moved here.
        self._logger = logging.getLogger(type(self).__module__)

    def __repr__(self) -> str:
        # Only a prefix of the client id; the secret never appears.
        name, prefix = type(self).__name__, self._client_id[:4]
        return f"{name}(base_url={self.base_url!r}, client_id={prefix!r}...)"

    # -- vendor hooks --------------------------------------------------------------------

    @abstractmethod
    def _request_token(self) -> httpx.Response:
        """Send the token request (a 2xx response, or raise via :meth:`_send`)."""

    @abstractmethod
    def _parse_token(self, body: Any) -> AccessToken:
        """Read the token response body; raise ``ValueError``/``KeyError`` if unusable."""

    def _auth_headers(self, token: Secret) -> dict[str, str]:
        """Headers for an authenticated call; vendors add media types here."""
        return {"Authorization": f"Bearer {token.reveal()}"}

    # -- token cache ---------------------------------------------------------------------

    def _bearer(self) -> Secret:
        """Return a valid access token, fetching one if needed (one request at a time).

        Raises:
            ProviderAuthError: client credentials rejected.
            TransientProviderError: the token endpoint is unreachable or failing.
        """
        with self._token_lock:
            token = self._token
            if token is not None and self._clock() < token.expires_at:
                return token.value
            response = self._request_token()
            self._token = self._parse(response, self._parse_token, write=False)
            self._logger.info(
                "%s access token obtained", self.provider, extra={"provider": self.provider}
            )
            return self._token.value

    def invalidate_token(self, stale: Secret | None = None) -> None:
        """Drop the cached token (only if it is still ``stale``, when given).

        Comparing with ``stale`` keeps a token another thread just fetched.
        """
        with self._token_lock:
            if stale is None or (self._token is not None and self._token.value == stale):
                self._token = None

    def _authed(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """Send with the Bearer token; on 401 refresh the token once and retry."""
        token = self._bearer()
        try:
            return self._send(
                method, path, params=params, json=json, headers=self._auth_headers(token)
            )
        except ProviderAuthError as exc:
            if exc.status_code != 401:
                raise
            self._logger.info(
                "%s token rejected; refreshing once",
                self.provider,
                extra={"provider": self.provider},
            )
            self.invalidate_token(token)
        token = self._bearer()
        return self._send(method, path, params=params, json=json, headers=self._auth_headers(token))

    def check(self) -> None:
        """Verify connectivity and credentials by obtaining a token.

        Raises:
            ProviderAuthError: credentials rejected.
            TransientProviderError: the API is unreachable.
        """
        self._bearer()
