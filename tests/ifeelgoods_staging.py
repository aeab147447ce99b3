"""Test staging for Ifeelgoods: a ``pending`` redemption, i.e. a half-done order.

The product never creates a redemption without redeeming it (one create-and-redeem call,
providers.md 1.9), so the vendor's create-only call (providers.md 1.6: 201 new, 200
existing) lives here, where the tests stage what a crash between create and redeem left.
"""

from __future__ import annotations

from typing import Any

from tasks.providers.ifeelgoods import IfeelgoodsClient, IfeelgoodsUser, Redemption


def create_pending_redemption(
    client: IfeelgoodsClient,
    promotion_id: int,
    order_id: str,
    user: IfeelgoodsUser | None = None,
    reward_sku: str | None = None,
) -> Redemption:
    """Create a ``pending`` redemption through ``client``, or find the one with this id."""
    payload: dict[str, Any] = {"order_id": order_id}
    if user is not None:
        payload["user"] = user.to_json()
    if reward_sku is not None:
        payload["reward"] = {"sku": reward_sku}
    path = client._path("/promotions/{}/redemptions", promotion_id)
    return client._post_redemption(path, payload)
