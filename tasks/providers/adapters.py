"""Reward-provider adapters: one call sequence per attempt, from a routed unit to a result.

Each adapter owns the provider-specific sequence for one decision from the ledger:
- SUBMIT: send the order under the unit's deterministic key;
- LOOKUP: the previous attempt's outcome is unknown, so look the key up first and only
  submit when the provider has never seen it;
- FOLLOW: the provider accepted the order earlier; read it again.
Errors are the typed ``ProviderError`` tree; the caller decides retry or dead letter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.http.errors import PermanentProviderError
from tasks.providers.ifeelgoods import IfeelgoodsClient, IfeelgoodsUser, Redemption
from tasks.providers.rewardops import Member, MemberSpend, Order, RewardOpsClient
from tasks.routing import Route
from worker.stores.ledger import BeginDecision
from worker.stores.models import UnitId

__all__ = [
    "IfeelgoodsAdapter",
    "ProviderAdapter",
    "RewardOpsAdapter",
    "ProviderResult",
    "ResultKind",
    "Recipient",
    "provider_key",
]


def provider_key(unit_id: str) -> str:
    """The provider idempotency key for a unit: ``{event id}-{line}-{index}``.

    Follows Ifeelgoods' suggested ``order_id`` scheme for multi-unit orders; the two
    numeric suffixes make it injective, so distinct units never share a key.
    """
    unit = UnitId.parse(unit_id)
    return f"{unit.event_id}-{unit.line}-{unit.index}"


class ResultKind(enum.StrEnum):
    DELIVERED = "delivered"  # codes or links in hand: the unit is fulfilled
    ACCEPTED = "accepted"  # the provider holds the order; delivery still pending


@dataclass(frozen=True)
class ProviderResult:
    kind: ResultKind
    reference: str
    codes: tuple[str, ...] = field(default=(), repr=False)
    links: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Recipient:
    email: str
    first_name: str = ""
    last_name: str = ""
    customer_id: str = ""
    address: dict[str, Any] | None = None

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.email


class ProviderAdapter(Protocol):
    name: str

    def fulfil(
        self, key: str, route: Route, recipient: Recipient, decision: BeginDecision
    ) -> ProviderResult: ...


class IfeelgoodsAdapter:
    """Create-and-redeem under ``order_id`` in one call; If-Match for anything half done.

    A first submission is one create-and-redeem call: idempotent on ``order_id`` (201
    first, 200 with the same codes on a replay; providers.md 1.9), and the vendor's one-call
    path, so each reward costs one request against a rate-limited API. After an unknown
    outcome the key is looked up first. A redemption that exists but is not redeemed (an
    order a previous release created and never redeemed, or one the provider hands back
    pending) is redeemed with ``If-Match`` on its version: a 412 re-reads, re-decides
    (already redeemed counts) and retries, bounded (providers.md 1.8).
    """

    name = "ifeelgoods"

    def __init__(self, client: IfeelgoodsClient) -> None:
        self._client = client

    def fulfil(
        self, key: str, route: Route, recipient: Recipient, decision: BeginDecision
    ) -> ProviderResult:
        user = IfeelgoodsUser(
            email=recipient.email,
            first_name=recipient.first_name or None,
            last_name=recipient.last_name or None,
            address=recipient.address,
        )
        redemption: Redemption | None = None
        if decision is not BeginDecision.SUBMIT:
            redemption = self._client.find_by_order_id(route.promotion_id, key)
        if redemption is None:
            redemption = self._client.create_and_redeem(route.promotion_id, route.sku, key, user)
        if not redemption.is_redeemed:
            redemption = self._client.ensure_redeemed(
                redemption.id, user, current=redemption, reward_sku=route.sku
            )
        return ProviderResult(
            ResultKind.DELIVERED,
            reference=redemption.id,
            codes=tuple(code.reveal() for code in redemption.codes),
            links=(redemption.url,) if redemption.url else (),
        )


class RewardOpsAdapter:
    """Create the program order under ``program_order_id`` and follow it to delivery."""

    name = "rewardops"

    def __init__(self, client: RewardOpsClient) -> None:
        self._client = client

    def fulfil(
        self, key: str, route: Route, recipient: Recipient, decision: BeginDecision
    ) -> ProviderResult:
        order: Order | None = None
        if decision is not BeginDecision.SUBMIT:
            order = self._client.get_order(route.program_id, key)
        if order is None:
            if decision is BeginDecision.FOLLOW:
                raise PermanentProviderError(
                    "rewardops", "accepted_order_vanished", status_code=404
                )
            order = self._client.create_order(
                route.program_id,
                key,
                self._member(recipient),
                route.item_order_token,
                member_spend=MemberSpend(route.spend_currency, route.spend_amount),
            )
        return self._evaluate(order)

    @staticmethod
    def _evaluate(order: Order) -> ProviderResult:
        if order.is_terminal_failure:
            raise PermanentProviderError("rewardops", "order_item_rejected")
        if order.is_delivered:
            codes = tuple(code.reveal() for item in order.items for code in item.codes)
            links = tuple(link.reveal() for item in order.items for link in item.links)
            return ProviderResult(ResultKind.DELIVERED, order.id, codes=codes, links=links)
        return ProviderResult(ResultKind.ACCEPTED, order.id)

    @staticmethod
    def _member(recipient: Recipient) -> Member:
        return Member(
            id=recipient.customer_id or recipient.email,
            full_name=recipient.full_name,
            email=recipient.email,
            address=recipient.address,
        )
