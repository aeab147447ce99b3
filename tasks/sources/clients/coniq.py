"""Source client, Coniq: record a delivered reward back in Coniq (providers.md section 3).

Stage: the loop back to the source (worker side, beat-scheduled drain). Authentication is
the account API key observed in public clients (3.2 [PUB S7]): ``Authorization: ApiKey
key="…"`` with ``x-api-version: 2.0``; bodies are plain JSON without an envelope (3.3).

The call is the Subscription API's "assign a reward to a customer's program subscription"
(3.5: described [SEED 004], path and body [DESIGN]): ``POST /subscription/{id}/reward``
``{offer_id, expiry_date, external_reference}``. Coniq has no idempotency key (3.6), so our
reference travels in ``external_reference``, which the simulator dedupes on: the same
reference is answered 200 with the first record, so a retry after a timeout never records
twice. Until Coniq confirms the endpoint, treat it as an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx

from tasks.http.base import DEFAULT_TIMEOUT, ProviderClient
from tasks.http.redaction import Secret
from worker.config import Settings

__all__ = ["AssignedReward", "ConiqClient"]

PROVIDER = "coniq"
API_VERSION = "2.0"  # providers.md 3.1: the Platform API version header


@dataclass(frozen=True)
class AssignedReward:
    """Coniq's record of the assignment; ``created`` is False for a replay (200).

    The response's ``barcode`` is deliberately not kept: it is redeemable, like a code.
    """

    id: str
    subscription_id: str
    offer_id: str
    created: bool


def _parse_assigned(body: Any, created: bool) -> AssignedReward:
    return AssignedReward(
        id=str(body["id"]),
        subscription_id=str(body["subscription_id"]),
        offer_id=str(body["offer_id"]),
        created=created,
    )


class ConiqClient(ProviderClient):
    """Client for ``{base_url}`` = ``https://api.coniq.com`` (EU) or the sandbox."""

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        if not api_key:
            raise ValueError("a Coniq API key is required")
        super().__init__(base_url, http=http, timeout=timeout)
        self._api_key = Secret(api_key)

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float | None = None) -> Self:
        """The client the settings describe (``timeout`` defaults to the provider timeout)."""
        return cls(
            settings.coniq_base_url,
            settings.coniq_api_key,
            timeout=settings.provider_timeout_seconds if timeout is None else timeout,
        )

    def __repr__(self) -> str:
        return f"ConiqClient(base_url={self.base_url!r})"

    def _describe_error(self, response: httpx.Response) -> tuple[str | None, str | None]:
        """providers.md 3.3: ``{"error": "msg"}`` or ``{"success": false, "error": [...]}``."""
        try:
            body = response.json()
        except ValueError:
            return None, None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, list) and error:
            error = error[0]
        return (None, str(error)[:200]) if isinstance(error, str) and error else (None, None)

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f'ApiKey key="{self._api_key.reveal()}"',
            "x-api-version": API_VERSION,
            "Content-Type": "application/json",
        }

    def check(self) -> None:
        """Verify reachability and the key (401 → ProviderAuthError)."""
        self._send("GET", "/subscription", params={"customer_email": ""}, headers=self._headers())

    def assign_reward(
        self,
        subscription_id: str,
        offer_id: str,
        external_reference: str,
        expiry_date: str | None = None,
    ) -> AssignedReward:
        """Assign ``offer_id`` to the subscription, keyed by ``external_reference``.

        Raises:
            UnknownOutcomeError: timeout/5xx; repeat with the same reference.
            TransientProviderError: connection failure or 429.
            PermanentProviderError: 4xx (e.g. 409 reference used for another subscription).
        """
        body: dict[str, Any] = {"offer_id": offer_id, "external_reference": external_reference}
        if expiry_date:
            body["expiry_date"] = expiry_date
        path = self._path("/subscription/{}/reward", subscription_id)
        response = self._send("POST", path, json=body, headers=self._headers())
        created = response.status_code == 201
        return self._parse(response, lambda b: _parse_assigned(b, created), write=True)
