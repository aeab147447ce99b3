"""Provider clients, RewardOps: API v4 program orders (providers.md section 2).

Stage: fulfilment (worker side). Places catalogue orders for a program member. Our
deterministic ``program_order_id`` is the idempotency key (2.9 [DESIGN]): a duplicate create
answers 409 and the client adopts the existing order, and after an unknown outcome the
caller looks the order up with :meth:`RewardOpsClient.get_order` before resubmitting.

Authentication is OAuth2 client credentials (2.2): one token request at a time, cached until
``created_at + expires_in`` minus a safety margin, invalidated and refreshed once when an API
call answers 401 (the SDK behaviour, [PUB S4]). Credentials travel only in the Basic header
of the token request, the token only in the Bearer header; neither is ever in a URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

import httpx

from tasks.http.errors import ConflictError, NotFoundError
from tasks.http.oauth import AccessToken, ClientCredentialsClient
from tasks.http.redaction import RewardCode, Secret
from worker.config import Settings

__all__ = ["ItemStatus", "Member", "MemberSpend", "Order", "OrderItem", "RewardOpsClient"]

logger = logging.getLogger(__name__)

PROVIDER = "rewardops"
TOKEN_REFRESH_MARGIN_SECONDS = 60.0  # refresh this long before expiry so no call races it
DEFAULT_TOKEN_TTL_SECONDS = 7200  # providers.md 2.2: tokens live two hours


class ItemStatus(StrEnum):
    """providers.md 2.7 order-item ``fulfillment.status`` (compared case-insensitively)."""

    PENDING = "pending"
    PROCESSING = "processing"
    SENT = "sent"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    RETURNED = "returned"
    CANCELED = "canceled"


FAILED_ITEM_STATUSES = frozenset({ItemStatus.REJECTED, ItemStatus.RETURNED, ItemStatus.CANCELED})
TERMINAL_ITEM_STATUSES = FAILED_ITEM_STATUSES | {ItemStatus.DELIVERED}


@dataclass(frozen=True)
class Member:
    """The program member the order is for (providers.md 2.6 ``member``); repr hides PII."""

    id: str
    full_name: str | None = field(default=None, repr=False)
    email: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    address: Mapping[str, str] | None = field(default=None, repr=False, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id}
        for key in ("full_name", "email", "phone"):
            value = getattr(self, key)
            if value:
                body[key] = value
        if self.address:
            body["address"] = dict(self.address)
        return body


@dataclass(frozen=True)
class MemberSpend:
    """What the member spent on an ordered item: providers.md 2.6 ``items[].member_spend``
    ([PUB S5]: required; ``currency_code`` is an ISO code such as ``USD`` or a points code
    ``XRO-xxx``, ``amount`` a decimal string). The routing rule decides it; rewards that
    cost the member nothing spend ``"0"`` in the programme's currency."""

    currency_code: str
    amount: str

    def to_json(self) -> dict[str, str]:
        return {"currency_code": self.currency_code, "amount": self.amount}


# A reward the member did not pay for, in the currency of the vendor's examples; the routing
# rules (tasks.routing) name the programme's own currency.
ZERO_SPEND = MemberSpend("USD", "0")


@dataclass(frozen=True)
class OrderItem:
    """One ordered unit; ``codes``/``links`` are filled once it is delivered (masked)."""

    id: str
    status: ItemStatus
    codes: tuple[RewardCode, ...] = ()
    links: tuple[RewardCode, ...] = ()

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_ITEM_STATUSES


@dataclass(frozen=True)
class Order:
    """A program order; ``status`` is the provider's (upper case), items carry the truth."""

    id: str
    program_order_id: str | None
    status: str
    items: tuple[OrderItem, ...]

    @property
    def is_delivered(self) -> bool:
        """Every item delivered (providers.md 2.7 [DESIGN]: success = ``delivered``)."""
        return bool(self.items) and all(i.status is ItemStatus.DELIVERED for i in self.items)

    @property
    def is_terminal_failure(self) -> bool:
        """Every item finished and at least one was rejected, returned or canceled."""
        return (
            bool(self.items)
            and all(i.is_terminal for i in self.items)
            and any(i.status in FAILED_ITEM_STATUSES for i in self.items)
        )

    @property
    def codes(self) -> tuple[RewardCode, ...]:
        return tuple(code for item in self.items for code in item.codes)

    @property
    def links(self) -> tuple[RewardCode, ...]:
        return tuple(link for item in self.items for link in item.links)


def _assets(entries: Any) -> tuple[RewardCode, ...]:
    if not entries:
        return ()
    return tuple(RewardCode(str(e["value"]), label=e.get("label")) for e in entries)


def _parse_order(data: Mapping[str, Any]) -> Order:
    """providers.md 2.6 order object: items grouped under ``suppliers[]``."""
    items: list[OrderItem] = []
    for supplier in data.get("suppliers") or ():
        for raw in supplier.get("items") or ():
            fulfillment = raw.get("fulfillment") or {}
            assets = raw.get("assets") or {}
            items.append(
                OrderItem(
                    id=str(raw["id"]),
                    status=ItemStatus(str(fulfillment.get("status", "pending")).lower()),
                    codes=_assets(assets.get("codes")),
                    links=_assets(assets.get("links")),
                )
            )
    program_order_id = data.get("program_order_id")
    return Order(
        id=str(data["id"]),
        program_order_id=str(program_order_id) if program_order_id is not None else None,
        status=str(data.get("status", "")).upper(),
        items=tuple(items),
    )


def _parse_single(body: Any) -> Order:
    """``{"status": "OK", "result": {"order": {...}}}`` (providers.md 2.3)."""
    if str(body.get("status", "")).upper() != "OK":
        raise ValueError("envelope status is not OK")
    return _parse_order(body["result"]["order"])


def _parse_list(body: Any) -> tuple[Order, ...]:
    if str(body.get("status", "")).upper() != "OK":
        raise ValueError("envelope status is not OK")
    return tuple(_parse_order(order) for order in body["result"]["orders"])


class RewardOpsClient(ClientCredentialsClient):
    """Client for ``{base_url}`` = ``https://app.rewardops.net/api/v4`` (or a sandbox).

    Thread-safe: the token cache (in :class:`ClientCredentialsClient`) is guarded by a lock
    so concurrent calls share one token request. Methods return frozen dataclasses or raise
    a :class:`~tasks.http.errors.ProviderError` subclass.
    """

    provider: ClassVar[str] = PROVIDER
    display_name: ClassVar[str] = "RewardOps"
    default_refresh_margin: ClassVar[float] = TOKEN_REFRESH_MARGIN_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float | None = None) -> Self:
        """The client the settings describe (``timeout`` defaults to the provider timeout)."""
        return cls(
            settings.rewardops_base_url,
            settings.rewardops_client_id,
            settings.rewardops_client_secret,
            timeout=settings.provider_timeout_seconds if timeout is None else timeout,
            pool_size=settings.worker_concurrency,
        )

    def _describe_error(self, response: httpx.Response) -> tuple[str | None, str | None]:
        """providers.md 2.3: ``{status, result: {error: {code, reason, detail}}}`` or
        a flat ``{"error": "..."}``; 5xx may have no body at all."""
        try:
            body = response.json()
        except ValueError:
            return None, None
        if not isinstance(body, dict):
            return None, None
        result = body.get("result")
        error = result.get("error") if isinstance(result, dict) else None
        if isinstance(error, dict):
            reason, detail = error.get("reason"), error.get("detail")
            return (str(reason) if reason else None, str(detail) if detail else None)
        flat = body.get("error")
        if isinstance(flat, str):
            description = body.get("error_description")
            return flat, str(description) if description else None
        return None, None

    # -- token ---------------------------------------------------------------------------

    def _request_token(self) -> httpx.Response:
        """providers.md 2.2: JSON body, credentials only in the Basic header."""
        return self._send(
            "POST",
            "/auth/token",
            json={"grant_type": "client_credentials"},
            auth=(self._client_id, self._client_secret.reveal()),
            idempotent=True,
        )

    def _parse_token(self, body: Any) -> AccessToken:
        """providers.md 2.2: ``{access_token, token_type, expires_in, created_at}``."""
        value = body["access_token"]
        if not isinstance(value, str) or not value:
            raise ValueError("no access_token in token response")
        now = self._clock()
        expires_in = float(body.get("expires_in") or DEFAULT_TOKEN_TTL_SECONDS)
        created_at = body.get("created_at")
        # Trust created_at + expires_in, but never beyond now + expires_in (clock skew).
        start = min(float(created_at), now) if isinstance(created_at, int | float) else now
        return AccessToken(Secret(value), start + expires_in - self._refresh_margin)

    # -- API -----------------------------------------------------------------------------

    def create_order(
        self,
        program_id: int,
        program_order_id: str,
        member: Member,
        item_order_token: str,
        quantity: int = 1,
        *,
        member_spend: MemberSpend = ZERO_SPEND,
    ) -> Order:
        """Place an order keyed by ``program_order_id``; a duplicate adopts the existing one.

        providers.md 2.6 body; 2.9 [DESIGN]: 409 on a duplicate ``program_order_id`` →
        look it up and return it, so a blind retry never orders twice. ``member_spend`` is
        required by the vendor and sent as the documented object ([PUB S5]; the SDK's
        array form carries the same fields).

        Raises:
            UnknownOutcomeError: timeout/5xx; call :meth:`get_order` before resubmitting.
            PermanentProviderError: validation error (400), e.g. an unknown item token.
            NotFoundError: unknown program.
            ConflictError: 409 but no order with this ``program_order_id`` can be found.
        """
        item = {
            "item_order_token": item_order_token,
            "quantity": quantity,
            "member_spend": member_spend.to_json(),
        }
        body = {
            "program_order_id": program_order_id,
            "payment_status": "PAID",
            "member": member.to_json(),
            "items": [item],
        }
        path = self._path("/programs/{}/orders", program_id)
        try:
            response = self._authed("POST", path, json=body)
        except ConflictError:
            existing = self.get_order(program_id, program_order_id)
            if existing is None:
                raise
            logger.info(
                "rewardops order already exists; adopting it",
                extra={"provider": PROVIDER, "program_order_id": program_order_id},
            )
            return existing
        return self._parse(response, _parse_single, write=True)

    def get_order(self, program_id: int, program_order_id: str) -> Order | None:
        """The order we created with ``program_order_id``, or None (404).

        Uses ``use_program_order_id=true`` (providers.md 2.6).
        """
        path = self._path("/programs/{}/orders/{}", program_id, program_order_id)
        try:
            response = self._authed("GET", path, params={"use_program_order_id": "true"})
        except NotFoundError:
            return None
        return self._parse(response, _parse_single, write=False)

    def list_orders(
        self, program_id: int, member_id: str, *, page: int = 1, per_page_count: int = 10
    ) -> tuple[Order, ...]:
        """One page of a member's orders, newest first (providers.md 2.4/2.6)."""
        response = self._authed(
            "GET",
            self._path("/programs/{}/orders", program_id),
            params={"member_id": member_id, "page": page, "per_page_count": per_page_count},
        )
        return self._parse(response, _parse_list, write=False)
