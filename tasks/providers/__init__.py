"""Provider clients: typed HTTP clients for Ifeelgoods and RewardOps, and their error tree.

Stage: fulfilment (worker side). The fulfilment logic calls these clients with a
deterministic idempotency key and decides retry versus dead-letter from the exception
class alone (see :mod:`tasks.providers.errors`). Reward codes come back as masked
:class:`RewardCode` values and secrets are held as :class:`Secret`, so neither leaks into
logs, reprs or exception messages.
"""

from __future__ import annotations

from tasks.providers.base import ProviderClient, error_from_response, parse_retry_after
from tasks.providers.errors import (
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
from tasks.providers.if_match import WRITE, Done, Write, update_with_if_match
from tasks.providers.ifeelgoods import (
    IfeelgoodsClient,
    IfeelgoodsUser,
    Redemption,
    RedemptionState,
)
from tasks.providers.redaction import RewardCode, Secret, mask
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
