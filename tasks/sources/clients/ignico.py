"""Source client, Ignico: wallet transactions (payouts) over the JSON:API v1 (providers.md 4).

Stage: reward source (worker side). The Ignico poller reads pending payouts through this
client and settles them after the reward was delivered or discarded. A payout is a wallet
transaction of type ``sub`` that is neither realized nor cancelled (4.5 [PUB S10]); it is
realized with ``PUT {realized: true}`` or cancelled with ``PUT {cancelled: true}``, and a
PUT on an already-closed transaction answers 409 (4.6 [DESIGN]).

Authentication is OAuth2 client credentials at ``/oauth2/token`` (4.2): 48 h tokens,
cached until ``now + expires_in`` minus a margin, dropped and fetched again once when a call
answers 401. Credentials travel only in the token request body, the token only in the
Bearer header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Self

import httpx

from tasks.http.oauth import AccessToken, ClientCredentialsClient
from tasks.http.redaction import Secret
from worker.config import Settings

__all__ = ["IgnicoClient", "IgnicoUser", "Transaction", "TransactionPage"]

PROVIDER = "ignico"
JSONAPI = "application/vnd.api+json"
TOKEN_REFRESH_MARGIN_SECONDS = 300.0  # refresh this long before expiry
DEFAULT_TOKEN_TTL_SECONDS = 172_800  # providers.md 4.2: 48 h
DEFAULT_PAGE_SIZE = 25  # providers.md 4.4 [SEED 000]
MAX_REASON_CHARS = 200  # cancellation reasons are short operator notes


@dataclass(frozen=True)
class IgnicoUser:
    """The wallet owner (repr hides personal data)."""

    id: str
    email: str = field(repr=False)
    first_name: str = field(default="", repr=False)
    last_name: str = field(default="", repr=False)


@dataclass(frozen=True)
class Transaction:
    """A wallet transaction; a pending payout is ``type == "sub"``, not realized or cancelled."""

    id: str
    type: str
    amount: Decimal
    currency: str
    realized: bool
    cancelled: bool
    added_at: str  # ``YYYY-MM-DD hh:mm:ss`` as Ignico sends it (also its filter format)
    user_id: str
    user: IgnicoUser | None = None

    @property
    def is_pending_payout(self) -> bool:
        return self.type == "sub" and not self.realized and not self.cancelled


@dataclass(frozen=True)
class TransactionPage:
    items: tuple[Transaction, ...]
    number: int
    last: int
    total: int

    @property
    def has_next(self) -> bool:
        return self.number < self.last


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _user(resource: Mapping[str, Any]) -> IgnicoUser:
    attributes = resource.get("attributes") or {}
    subject = attributes.get("subject") or {}
    person = subject.get("person") if isinstance(subject, dict) else None
    person = person if isinstance(person, dict) else {}
    return IgnicoUser(
        id=str(resource["id"]),
        email=str(attributes["email"]),
        first_name=str(person.get("firstName") or ""),
        last_name=str(person.get("lastName") or ""),
    )


def _transaction(resource: Mapping[str, Any], users: Mapping[str, IgnicoUser]) -> Transaction:
    """providers.md 4.3: the id is duplicated inside ``attributes`` (the real client reads it)."""
    attributes = resource["attributes"]
    relation = ((resource.get("relationships") or {}).get("user") or {}).get("data") or {}
    user_id = str(relation.get("id", ""))
    return Transaction(
        id=str(attributes.get("id", resource["id"])),
        type=str(attributes["type"]),
        amount=Decimal(str(attributes["amount"])),
        currency=str(attributes.get("currency") or ""),
        realized=_flag(attributes.get("realized")),
        cancelled=_flag(attributes.get("cancelled")),
        added_at=str(attributes.get("addedAt") or ""),
        user_id=user_id,
        user=users.get(user_id),
    )


def _parse_page(body: Any) -> TransactionPage:
    users = {str(r["id"]): _user(r) for r in body.get("included") or () if r.get("type") == "user"}
    items = tuple(_transaction(r, users) for r in body["data"])
    page = (body.get("meta") or {}).get("page") or {}
    number = int(page.get("current-page", 1))
    return TransactionPage(
        items=items,
        number=number,
        last=int(page.get("last-page", number)),
        total=int(page.get("total", len(items))),
    )


def _parse_single(body: Any) -> Transaction:
    return _transaction(body["data"], {})


class IgnicoClient(ClientCredentialsClient):
    """Client for ``{base_url}`` = ``https://{workspace}.igni.co/api/v1`` (or the sandbox).

    Thread-safe token cache (in :class:`ClientCredentialsClient`). Methods return frozen
    dataclasses or raise a :class:`~tasks.http.errors.ProviderError` subclass.
    """

    provider: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "Ignico"
    default_refresh_margin: ClassVar[float] = TOKEN_REFRESH_MARGIN_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float | None = None) -> Self:
        """The client the settings describe (``timeout`` defaults to the provider timeout)."""
        return cls(
            settings.ignico_base_url,
            settings.ignico_client_id,
            settings.ignico_client_secret,
            timeout=settings.provider_timeout_seconds if timeout is None else timeout,
        )

    def _describe_error(self, response: httpx.Response) -> tuple[str | None, str | None]:
        """JSON:API ``errors[0].code/detail`` (4.3 [DESIGN]) or the token ``error``."""
        try:
            body = response.json()
        except ValueError:
            return None, None
        if not isinstance(body, dict):
            return None, None
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code, detail = first.get("code") or first.get("title"), first.get("detail")
            return (str(code) if code else None, str(detail) if detail else None)
        flat = body.get("error")
        if isinstance(flat, str):
            message = body.get("message")
            return flat, str(message) if message else None
        return None, None

    # -- token ---------------------------------------------------------------------------

    def _request_token(self) -> httpx.Response:
        """providers.md 4.2: credentials as form fields of the token request body."""
        return self._send(
            "POST",
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret.reveal(),
            },
            idempotent=True,
        )

    def _parse_token(self, body: Any) -> AccessToken:
        """providers.md 4.2: ``{token_type, expires_in, access_token}``."""
        value = body["access_token"]
        if not isinstance(value, str) or not value:
            raise ValueError("no access_token in token response")
        expires_in = float(body.get("expires_in") or DEFAULT_TOKEN_TTL_SECONDS)
        # A short-lived token must not be refreshed before it is used: cap the margin.
        margin = min(self._refresh_margin, expires_in / 2)
        return AccessToken(Secret(value), self._clock() + expires_in - margin)

    def _auth_headers(self, token: Secret) -> dict[str, str]:
        """Bearer token plus the JSON:API media type on both sides (providers.md 4.3)."""
        return {
            "Authorization": f"Bearer {token.reveal()}",
            "Accept": JSONAPI,
            "Content-Type": JSONAPI,
        }

    # -- API -----------------------------------------------------------------------------

    def list_transactions(
        self,
        filters: Mapping[str, str] | None = None,
        *,
        sort: str = "id",
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        include_user: bool = True,
    ) -> TransactionPage:
        """One page of wallet transactions (providers.md 4.4: ``filter[...]``, ``sort``,
        ``page[number]``, ``page[size]``)."""
        params: dict[str, str | int] = {f"filter[{k}]": v for k, v in (filters or {}).items()}
        params.update({"sort": sort, "page[number]": page, "page[size]": page_size})
        if include_user:
            params["include"] = "user"
        response = self._authed("GET", "/users/wallets/transactions", params=params)
        return self._parse(response, _parse_page, write=False)

    def pending_payouts(
        self, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE, added_since: str | None = None
    ) -> TransactionPage:
        """Pending payouts, oldest id first: ``type=sub``, not realized, not cancelled.

        ``added_since`` (``YYYY-MM-DD hh:mm:ss``, inclusive) narrows the walk to payouts
        added at or after a watermark.
        """
        filters = {"type": "sub", "realized": "0", "cancelled": "0"}
        if added_since:
            filters["addedAtGreaterEqual"] = added_since
        return self.list_transactions(filters, sort="id", page=page, page_size=page_size)

    def find_with_user(self, transaction_id: str) -> Transaction | None:
        """One transaction with its user (``filter[id]`` and ``include=user``, 4.4), or
        None when Ignico has none by that id. A single GET carries no ``included`` user."""
        page = self.list_transactions({"id": transaction_id}, page_size=1)
        return next((tx for tx in page.items if tx.id == transaction_id), None)

    def get_transaction(self, transaction_id: str) -> Transaction:
        """Raises: NotFoundError for an unknown id."""
        path = self._path("/users/wallets/transactions/{}", transaction_id)
        return self._parse(self._authed("GET", path), _parse_single, write=False)

    def realize(self, transaction_id: str) -> Transaction:
        """Mark a payout paid. Raises ConflictError (409) if it is already closed."""
        return self._update(transaction_id, {"realized": True})

    def cancel(self, transaction_id: str, reason: str) -> Transaction:
        """Cancel a payout with a short reason. Raises ConflictError if already closed."""
        attributes: dict[str, Any] = {"cancelled": True}
        if reason:
            attributes["cancellationReason"] = reason[:MAX_REASON_CHARS]
        return self._update(transaction_id, attributes)

    def _update(self, transaction_id: str, attributes: Mapping[str, Any]) -> Transaction:
        path = self._path("/users/wallets/transactions/{}", transaction_id)
        body = {"data": {"type": "transaction", "attributes": dict(attributes)}}
        # Setting a flag is idempotent: a 5xx or timeout is safe to repeat blindly.
        response = self._authed("PUT", path, json=body)
        return self._parse(response, _parse_single, write=False)
