"""Source client, orders platform: the unnamed OAuth2 platform's orders (providers.md 5).

Stage: reward source (worker side). The platform only offers the authorization-code flow
(5.1 [SEED 001]): an operator connects once (``rewardrelay connect orders-platform``), the
refresh token is kept in a :class:`TokenStore`, and this client refreshes the access token
when it is missing, expired or answered 401. Refresh tokens rotate ([DESIGN], Laravel
Passport): every refresh returns a new one, which is saved before the access token is used.

Listing follows the seed: ``page`` switches pagination on (Laravel-style object),
``sort=-field`` sorts descending, ``filter[name]=v1,v2`` is an OR list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import urlencode

import httpx

from tasks.http.base import DEFAULT_TIMEOUT, ProviderClient
from tasks.http.errors import ProviderAuthError
from tasks.http.oauth import AccessToken
from tasks.http.redaction import Secret
from worker.config import Settings

__all__ = ["OrdersPlatformClient", "PlatformOrder", "OrderPage", "TokenStore"]

logger = logging.getLogger(__name__)

PROVIDER = "orders_platform"
TOKEN_REFRESH_MARGIN_SECONDS = 60.0
DEFAULT_ACCESS_TTL_SECONDS = 3600
DEFAULT_PER_PAGE = 15  # providers.md 5.2


class TokenStore(Protocol):
    """Where the refresh token lives between processes and restarts."""

    def load(self) -> str | None: ...

    def save(self, refresh_token: str) -> None: ...


@dataclass(frozen=True)
class PlatformOrder:
    id: str
    status: str
    total: Decimal
    currency: str
    created_at: str  # ``YYYY-MM-DD HH:MM:SS`` (seed 001): sorts as text
    updated_at: str
    email: str = field(repr=False)
    first_name: str = field(default="", repr=False)
    last_name: str = field(default="", repr=False)


@dataclass(frozen=True)
class OrderPage:
    items: tuple[PlatformOrder, ...]
    current_page: int
    last_page: int
    total: int

    @property
    def has_next(self) -> bool:
        return self.current_page < self.last_page


def _order(raw: Mapping[str, Any]) -> PlatformOrder:
    customer = raw.get("customer") or {}
    return PlatformOrder(
        id=str(raw["id"]),
        status=str(raw["status"]),
        total=Decimal(str(raw["total"])),
        currency=str(raw.get("currency") or ""),
        created_at=str(raw.get("created_at") or ""),
        updated_at=str(raw.get("updated_at") or raw.get("created_at") or ""),
        email=str(customer.get("email") or ""),
        first_name=str(customer.get("first_name") or ""),
        last_name=str(customer.get("last_name") or ""),
    )


def _parse_page(body: Any) -> OrderPage:
    """providers.md 5.1: ``{total, per_page, current_page, last_page, …, data[]}``."""
    if isinstance(body, list):  # pagination off (5.1): everything on one "page"
        return OrderPage(tuple(_order(r) for r in body), 1, 1, len(body))
    items = tuple(_order(r) for r in body["data"])
    return OrderPage(
        items=items,
        current_page=int(body["current_page"]),
        last_page=int(body["last_page"]),
        total=int(body.get("total", len(items))),
    )


def _parse_single(body: Any) -> PlatformOrder:
    """One order: the resource itself, or Laravel's ``{"data": {...}}`` wrapping."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return _order(body["data"])
    return _order(body)


class OrdersPlatformClient(ProviderClient):
    """Client for the platform at ``base_url`` (root: ``/oauth/*`` and ``/api/*``)."""

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        tokens: TokenStore,
        *,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("orders platform client_id and client_secret are required")
        super().__init__(base_url, http=http, timeout=timeout)
        self._client_id = client_id
        self._client_secret = Secret(client_secret)
        self._redirect_uri = redirect_uri
        self._tokens = tokens
        self._clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, tokens: TokenStore, *, timeout: float | None = None
    ) -> Self:
        """The client the settings describe, its refresh token kept in ``tokens``."""
        return cls(
            settings.orders_base_url,
            settings.orders_client_id,
            settings.orders_client_secret,
            settings.orders_redirect_uri,
            tokens,
            timeout=settings.provider_timeout_seconds if timeout is None else timeout,
        )

    def __repr__(self) -> str:
        return f"OrdersPlatformClient(base_url={self.base_url!r})"

    def _describe_error(self, response: httpx.Response) -> tuple[str | None, str | None]:
        """Laravel ``{"message"}``; OAuth ``{"error", "message"}``."""
        try:
            body = response.json()
        except ValueError:
            return None, None
        if not isinstance(body, dict):
            return None, None
        name = body.get("error")
        message = body.get("message")
        return (
            str(name) if isinstance(name, str) else None,
            str(message) if isinstance(message, str) else None,
        )

    # -- connect (authorization code) ----------------------------------------------------

    def authorize_url(self, state: str) -> str:
        """The consent URL the operator opens once (providers.md 5.2 [DESIGN])."""
        query = {
            "client_id": self._client_id,
            "redirect_uri": self._redirect_uri,
            "response_type": "code",
            "scope": "",
            "state": state,
        }
        return f"{self.base_url}/oauth/authorize?{urlencode(query)}"

    def exchange_code(self, code: str) -> None:
        """Trade the one-time code for tokens; the refresh token goes to the store.

        Raises:
            PermanentProviderError: the code is invalid, used, or for another redirect URL.
            ProviderAuthError: client credentials rejected.
        """
        with self._lock:
            self._grant(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self._redirect_uri,
                }
            )

    def _grant(self, params: Mapping[str, str]) -> Secret:
        """POST /oauth/token; save the (rotated) refresh token before using the access one."""
        body = {
            **params,
            "client_id": self._client_id,
            "client_secret": self._client_secret.reveal(),
        }
        response = self._send("POST", "/oauth/token", data=body, idempotent=True)
        token, refresh = self._parse(response, self._parse_token, write=False)
        if refresh:
            self._tokens.save(refresh)
        self._token = token
        return token.value

    def _parse_token(self, body: Any) -> tuple[AccessToken, str]:
        value = body["access_token"]
        if not isinstance(value, str) or not value:
            raise ValueError("no access_token in token response")
        ttl = float(body.get("expires_in") or DEFAULT_ACCESS_TTL_SECONDS)
        margin = min(TOKEN_REFRESH_MARGIN_SECONDS, ttl / 2)
        refresh = body.get("refresh_token")
        return AccessToken(Secret(value), self._clock() + ttl - margin), str(refresh or "")

    def _bearer(self, stale: Secret | None = None) -> Secret:
        """A valid access token, refreshed with the stored refresh token when needed.

        Raises:
            ProviderAuthError: not connected yet, or the refresh token was refused.
        """
        with self._lock:
            token = self._token
            if token is not None and token.value != stale and self._clock() < token.expires_at:
                return token.value
            refresh = self._tokens.load()
            if not refresh:
                raise ProviderAuthError(
                    PROVIDER, "not_connected", detail="run: rewardrelay connect orders-platform"
                )
            try:
                return self._grant({"grant_type": "refresh_token", "refresh_token": refresh})
            except ProviderAuthError:
                raise
            except Exception:
                self._token = None
                raise

    def _authed(
        self, method: str, path: str, *, params: Mapping[str, str | int] | None = None
    ) -> httpx.Response:
        token = self._bearer()
        headers = {"Authorization": f"Bearer {token.reveal()}"}
        try:
            return self._send(method, path, params=params, headers=headers)
        except ProviderAuthError as exc:
            if exc.status_code != 401:
                raise
            logger.info("orders platform token rejected; refreshing once")
        token = self._bearer(stale=token)
        headers = {"Authorization": f"Bearer {token.reveal()}"}
        return self._send(method, path, params=params, headers=headers)

    # -- API -----------------------------------------------------------------------------

    def check(self) -> None:
        """Verify we are connected (a valid or refreshable token)."""
        self._bearer()

    def list_orders(
        self,
        filters: Mapping[str, Sequence[str]] | None = None,
        *,
        sort: str = "id",
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
    ) -> OrderPage:
        """One page of orders: ``filter[name]=v1,v2``, ``sort=[-]field``, ``page``,
        ``per_page`` (providers.md 5.1)."""
        params: dict[str, str | int] = {
            f"filter[{name}]": ",".join(values) for name, values in (filters or {}).items()
        }
        params.update({"sort": sort, "page": page, "per_page": per_page})
        response = self._authed("GET", "/api/orders", params=params)
        return self._parse(response, _parse_page, write=False)

    def get_order(self, order_id: str) -> PlatformOrder:
        """One order by id (providers.md 5.2, ``GET /api/orders/{id}``); 404 → NotFoundError."""
        response = self._authed("GET", self._path("/api/orders/{}", order_id))
        return self._parse(response, _parse_single, write=False)
