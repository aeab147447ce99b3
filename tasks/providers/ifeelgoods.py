"""Provider clients, Ifeelgoods: Fulfillment API v2 redemptions (providers.md section 1).

Stage: fulfilment (worker side). Issues digital reward codes through redemptions. Our
deterministic ``order_id`` is the idempotency key (providers.md 1.9): create-and-redeem
answers 201 the first time and 200 with the same redemption on a replay, so a retry after a
timeout never buys a second code. State changes on an existing redemption carry
``If-Match: "<version>"`` (1.8 [DESIGN]); a 412 is handled by
:func:`tasks.providers.if_match.update_with_if_match`
(see :meth:`IfeelgoodsClient.ensure_redeemed`).

Authentication is header based (``Api-Key``/``Api-Secret``), the documented
server-to-server method; the secret travels only in a header, never in a URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

import httpx

from tasks.http.base import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, ProviderClient
from tasks.http.errors import NotFoundError, PermanentProviderError
from tasks.http.redaction import RewardCode, Secret
from tasks.providers.if_match import DEFAULT_MAX_ATTEMPTS, WRITE, Done, Write, update_with_if_match
from worker.config import Settings

__all__ = ["IfeelgoodsClient", "IfeelgoodsUser", "Redemption", "RedemptionState"]

logger = logging.getLogger(__name__)

PROVIDER = "ifeelgoods"
LOOKUP_PAGE_SIZE = 5  # an order_id matches at most one redemption; a few rows are plenty


class RedemptionState(StrEnum):
    """providers.md 1.6/1.7: redemption states (``booked``/``canceled`` from S2)."""

    BOOKED = "booked"
    PENDING = "pending"
    REDEEMED = "redeemed"
    DENIED = "denied"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class IfeelgoodsUser:
    """The end user a reward is for (providers.md 1.6 ``User``); repr hides contact data."""

    email: str = field(repr=False)
    first_name: str | None = field(default=None, repr=False)
    last_name: str | None = field(default=None, repr=False)
    phone_number: str | None = field(default=None, repr=False)
    address: Mapping[str, str] | None = field(default=None, repr=False, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"email": self.email}
        for key in ("first_name", "last_name", "phone_number"):
            value = getattr(self, key)
            if value:
                body[key] = value
        if self.address:
            body["address"] = dict(self.address)
        return body


@dataclass(frozen=True)
class Redemption:
    """A redemption as last seen; ``codes`` are masked :class:`RewardCode` values."""

    id: str
    state: RedemptionState
    version: int
    order_id: str
    reward_sku: str | None
    codes: tuple[RewardCode, ...] = ()
    url: str | None = field(default=None, repr=False)  # the end user's e-card page

    @property
    def is_redeemed(self) -> bool:
        return self.state is RedemptionState.REDEEMED


def _parse_redemption(data: Mapping[str, Any], version: Any) -> Redemption:
    if isinstance(version, bool) or not isinstance(version, int):
        version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("redemption without an integer version")
    reward = data.get("reward")
    sku = reward.get("sku") if isinstance(reward, Mapping) else None
    reward_codes = data.get("reward_codes")
    codes: list[RewardCode] = []
    if isinstance(reward_codes, Mapping):
        for entry in reward_codes.get("codes") or ():
            codes.append(RewardCode(str(entry["value"]), label=entry.get("name")))
    url = data.get("url")
    return Redemption(
        id=str(data["id"]),
        state=RedemptionState(str(data["state"]).lower()),
        version=version,
        order_id=str(data["order_id"]),
        reward_sku=str(sku) if sku is not None else None,
        codes=tuple(codes),
        url=str(url) if url else None,
    )


def _parse_single(body: Any) -> Redemption:
    """``{"data": Redemption, "version": n}`` (providers.md 1.3)."""
    return _parse_redemption(body["data"], body.get("version"))


def _parse_ids(body: Any) -> list[str]:
    """Collection envelope ``{"data": [...], "paging": {...}}`` (providers.md 1.3/1.4)."""
    rows = body["data"]
    if not isinstance(rows, list):
        raise TypeError("collection data is not a list")
    return [str(row["id"]) for row in rows]


class IfeelgoodsClient(ProviderClient):
    """Client for ``{base_url}`` = ``https://api.ifeelgoods.com/fulfillment/v2`` (or a sandbox).

    Every method returns frozen dataclasses or raises a
    :class:`~tasks.http.errors.ProviderError` subclass.
    """

    provider: ClassVar[str] = PROVIDER
    reload_conflicts: ClassVar[frozenset[str]] = frozenset({"conflict"})

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("Ifeelgoods api_key and api_secret are required")
        super().__init__(base_url, http=http, timeout=timeout, pool_size=pool_size)
        self._api_key = api_key
        self._api_secret = Secret(api_secret)

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float | None = None) -> Self:
        """The client the settings describe (``timeout`` defaults to the provider timeout)."""
        return cls(
            settings.ifeelgoods_base_url,
            settings.ifeelgoods_api_key,
            settings.ifeelgoods_api_secret,
            timeout=settings.provider_timeout_seconds if timeout is None else timeout,
            pool_size=settings.worker_concurrency,
        )

    def __repr__(self) -> str:
        return f"IfeelgoodsClient(base_url={self.base_url!r}, api_key={self._api_key[:4]!r}...)"

    def _auth_headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Api-Key": self._api_key, "Api-Secret": self._api_secret.reveal()}
        headers.update(extra or {})
        return headers

    def _describe_error(self, response: httpx.Response) -> tuple[str | None, str | None]:
        """providers.md 1.5: ``{"error_name": ..., "error_message": ...}``."""
        try:
            body = response.json()
        except ValueError:
            return None, None
        if not isinstance(body, dict):
            return None, None
        name = body.get("error_name")
        message = body.get("error_message")
        return (str(name) if name else None, str(message) if message else None)

    def _post_redemption(
        self, path: str, payload: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> Redemption:
        response = self._send(
            "POST", path, json={"data": payload}, headers=self._auth_headers(headers)
        )
        return self._parse(response, _parse_single, write=True)

    def check(self) -> None:
        """Verify connectivity and credentials (``GET /accounts/me``).

        Raises:
            ProviderAuthError: credentials rejected.
            TransientProviderError: the API is unreachable.
        """
        self._send("GET", "/accounts/me", headers=self._auth_headers())

    def create_and_redeem(
        self, promotion_id: int, reward_sku: str, order_id: str, user: IfeelgoodsUser
    ) -> Redemption:
        """Create and redeem in one call; a replay with the same ``order_id`` and user
        returns the same redemption and codes (providers.md 1.9 [PUB S3]: 201, then 200).

        Raises:
            UnknownOutcomeError: timeout/5xx; safe to call again with the same ``order_id``.
            ConflictError: the ``order_id`` belongs to another user or SKU.
            NotFoundError: unknown promotion or SKU.
            PermanentProviderError: invalid user or request, redemption not redeemable.
        """
        path = self._path(
            "/promotions/{}/rewards/{}/redemptions/actions/redeem", promotion_id, reward_sku
        )
        return self._post_redemption(path, {"order_id": order_id, "user": user.to_json()})

    def get_redemption(self, redemption_id: str) -> Redemption:
        """``GET /redemptions/{id}``.

        Raises:
            NotFoundError: no such redemption.
        """
        response = self._send(
            "GET", self._path("/redemptions/{}", redemption_id), headers=self._auth_headers()
        )
        return self._parse(response, _parse_single, write=False)

    def find_by_order_id(self, promotion_id: int, order_id: str) -> Redemption | None:
        """The redemption created for ``order_id`` in this promotion, or None.

        Lists with the ``order_id`` filter, then reads the redemption itself, because only
        single-resource responses carry the authoritative ``version`` (providers.md 1.3).
        """
        response = self._send(
            "GET",
            self._path("/promotions/{}/redemptions", promotion_id),
            params={"order_id": order_id, "page": 1, "per_page": LOOKUP_PAGE_SIZE},
            headers=self._auth_headers(),
        )
        ids = self._parse(response, _parse_ids, write=False)
        if not ids:
            return None
        try:
            return self.get_redemption(ids[0])
        except NotFoundError:
            return None  # deleted between list and read (sandbox wipe); treat as absent

    def redeem(
        self,
        redemption_id: str,
        user: IfeelgoodsUser,
        *,
        version: int | None,
        reward_sku: str | None = None,
    ) -> Redemption:
        """Redeem a pending redemption with ``If-Match: "<version>"`` (None: unconditional).

        Raises:
            PreconditionFailedError: ``version`` is stale (412); re-read and re-decide.
            ConflictError: ``user_mismatch``.
            PermanentProviderError: ``operation_refused`` (e.g. canceled).
            UnknownOutcomeError: timeout/5xx; re-read before deciding again.
        """
        payload: dict[str, Any] = {"user": user.to_json()}
        if reward_sku is not None:
            payload["reward"] = {"sku": reward_sku}
        path = self._path("/redemptions/{}/actions/redeem", redemption_id)
        return self._post_redemption(path, payload, headers=_if_match(version))

    def cancel(self, redemption_id: str, *, version: int | None) -> Redemption:
        """Cancel a pending/booked redemption with ``If-Match`` (providers.md 1.7).

        Raises:
            PreconditionFailedError: ``version`` is stale (412).
            PermanentProviderError: ``operation_refused`` (already redeemed).
        """
        path = self._path("/redemptions/{}/actions/cancel", redemption_id)
        response = self._send("POST", path, headers=self._auth_headers(_if_match(version)))
        return self._parse(response, _parse_single, write=True)

    def ensure_redeemed(
        self,
        redemption_id: str,
        user: IfeelgoodsUser,
        *,
        current: Redemption | None = None,
        reward_sku: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Redemption:
        """Bring a redemption to ``redeemed`` and return it with its codes.

        Already redeemed (by us earlier or by a concurrent worker) counts as success. On 412
        the redemption is re-read and the decision made again (providers.md 1.8 [DESIGN]).

        Raises:
            VersionConflictError: still stale after ``max_attempts`` writes.
            PermanentProviderError: the redemption is canceled, denied or failed.
        """

        def decide(snapshot: Redemption) -> Done[Redemption] | Write:
            if snapshot.state is RedemptionState.REDEEMED:
                return Done(snapshot)
            if snapshot.state in (RedemptionState.PENDING, RedemptionState.BOOKED):
                return WRITE
            raise PermanentProviderError(PROVIDER, f"redemption_{snapshot.state.value}")

        return update_with_if_match(
            read=lambda: self.get_redemption(redemption_id),
            decide=decide,
            write=lambda snap: self.redeem(
                snap.id, user, version=snap.version, reward_sku=reward_sku
            ),
            current=current,
            max_attempts=max_attempts,
            provider=PROVIDER,
        )


def _if_match(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": f'"{version}"'}
