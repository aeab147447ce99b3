"""Reward providers: typed HTTP clients for Ifeelgoods and RewardOps, and their adapters.

Stage: fulfilment (worker side). :mod:`tasks.providers.adapters` turns one routed unit
into one provider call sequence; :mod:`tasks.fulfilment` calls the adapters with a
deterministic idempotency key and decides retry versus dead-letter from the exception
class alone (see :mod:`tasks.http.errors`, re-exported here with the redaction types).
The reward *sources'* clients (Ignico, orders platform, Coniq) live in
:mod:`tasks.sources.clients`. Reward codes come back as masked
:class:`RewardCode` values and secrets are held as :class:`Secret`, so neither leaks into
logs, reprs or exception messages.
"""

from __future__ import annotations

from tasks.http.base import ProviderClient, error_from_response, parse_retry_after
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
    VersionConflictError,
)
from tasks.http.redaction import RewardCode, Secret, mask
from tasks.providers.if_match import WRITE, Done, Write, update_with_if_match
from tasks.providers.ifeelgoods import (
    IfeelgoodsClient,
    IfeelgoodsUser,
    Redemption,
    RedemptionState,
)
from tasks.providers.rewardops import ItemStatus, Member, Order, OrderItem, RewardOpsClient

__all__ = [
    "WRITE",
    "ConflictError",
    "Done",
    "IfeelgoodsClient",
    "IfeelgoodsUser",
    "ItemStatus",
    "Member",
    "NotFoundError",
    "Order",
    "OrderItem",
    "PermanentProviderError",
    "PreconditionFailedError",
    "ProviderAuthError",
    "ProviderClient",
    "ProviderError",
    "RateLimitedError",
    "Redemption",
    "RedemptionState",
    "RewardCode",
    "RewardOpsClient",
    "Secret",
    "TransientProviderError",
    "UnknownOutcomeError",
    "VersionConflictError",
    "Write",
    "error_from_response",
    "mask",
    "parse_retry_after",
    "update_with_if_match",
]
