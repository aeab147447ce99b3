"""Provider clients, Coniq: record a delivered reward back in Coniq (providers.md section 3).

Stage: the loop back to the source (worker side, beat-scheduled drain). Authentication is
the account API key observed in public clients (3.2 [PUB S7]): ``Authorization: ApiKey
key="…"`` with ``x-api-version: 2.0``. The record endpoint and its ``external_reference``
dedupe are our design (3.5/3.6 [DESIGN]) until Coniq confirms one: the same reference is
answered 200 with the first record, so a retry after a timeout never records twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from tasks.providers.base import DEFAULT_TIMEOUT, ProviderClient
from tasks.providers.redaction import Secret

__all__ = ["ConiqClient", "FulfilmentRecord"]

PROVIDER = "coniq"
API_VERSION = "2.0"  # providers.md 3.1: the Platform API version header


@dataclass(frozen=True)
class FulfilmentRecord:
    """Coniq's record of one delivered reward; ``created`` is False for a replay (200)."""

    id: str
    reward_id: str
    external_reference: str
    created: bool


def _parse_record(body: Any, created: bool) -> FulfilmentRecord:
    return FulfilmentRecord(
        id=str(body["id"]),
        reward_id=str(body["reward_id"]),
        external_reference=str(body["external_reference"]),
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
        return (None, str(error)) if isinstance(error, str) and error else (None, None)

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f'ApiKey key="{self._api_key.reveal()}"',
            "x-api-version": API_VERSION,
            "Content-Type": "application/json",
        }

    def record_fulfilment(
        self, reward_id: str, external_reference: str, details: Mapping[str, Any]
    ) -> FulfilmentRecord:
        """Record that the reward was delivered, keyed by ``external_reference``.

        ``details``: ``customer_id`` (required), ``subscription_id``, ``provider``,
        ``provider_reference``, ``fulfilled_at``. Never include reward codes.

        Raises:
            UnknownOutcomeError: timeout/5xx; repeat with the same reference.
            TransientProviderError: connection failure or 429.
            PermanentProviderError: 4xx (e.g. 409 reference used for another reward).
        """
        body = {**dict(details), "external_reference": external_reference}
        path = self._path("/reward/{}/fulfilment", reward_id)
        response = self._send("POST", path, json=body, headers=self._headers())
        return self._parse(
            response, lambda b: _parse_record(b, response.status_code == 201), write=True
        )

    def fulfilments(self, reward_id: str) -> tuple[FulfilmentRecord, ...]:
        """Every record Coniq holds for one reward."""
        path = self._path("/reward/{}/fulfilment", reward_id)
        response = self._send("GET", path, headers=self._headers())
        return self._parse(
            response, lambda b: tuple(_parse_record(r, False) for r in b), write=False
        )
