"""Reward sources, emitting: sign an internal ``reward.granted`` event and POST it to ``/events``.

Stage: producers (worker side, before the edge). A source poller never writes to the
ledger itself: it sends each payout or order through the receiver's public ingest path, so
the same signature check, validation, dedupe by event id, ledger and routing rules apply
as for any internal producer. Event ids are deterministic per source item, so a repeated
emit is answered ``200 duplicate`` and can never grant a second reward.

Signing follows Standard Webhooks v1 (DESIGN.md "Events"). It is re-implemented here in a
few lines rather than imported from ``worker.signing`` because imports point one way
(``webhooks → tasks → worker``); the tests prove the edge's verifier accepts it.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from worker.signing import signed_headers

__all__ = [
    "EmitError",
    "EmitResult",
    "Emitter",
    "HttpEmitter",
    "RewardEvent",
    "source_time",
]

EMIT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)  # seconds; the edge answers in milliseconds
EVENTS_PATH = "/events"
MAX_ERROR_DETAIL = 200  # characters of an edge error body kept for logs
ITEM_REFUSALS = frozenset({400, 422})  # the edge refused this event's body, not the setup
SOURCE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # Ignico (providers.md 4.4) and seed 001 stamps


class EmitError(Exception):
    """The receiver did not take the event (unreachable, 5xx, or refused it).

    ``retryable`` is False only when the edge refused *this event* (400 malformed, 422
    invalid or id-conflict): the poller records the item as rejected and goes on. Anything
    else (unreachable, 5xx, 429, but also 401 wrong secret, 404 wrong ``RECEIVER_URL``,
    413/415) is a problem of the setup or the moment, not of the item: the poller stops
    and the next run retries the same item, so a misconfiguration never rejects payouts.
    """

    def __init__(self, reason: str, *, status_code: int | None = None, retryable: bool = True):
        status = f" (HTTP {status_code})" if status_code is not None else ""
        super().__init__(f"receiver: {reason}{status}")
        self.reason = reason
        self.status_code = status_code
        self.retryable = retryable


class EmitResult(enum.StrEnum):
    ACCEPTED = "accepted"  # 202: new event, durably stored
    DUPLICATE = "duplicate"  # 200: this event id was seen before (a repeat emit)


@dataclass(frozen=True)
class RewardEvent:
    """An internal ``reward.granted`` event for one source item (DESIGN.md "Events").

    Every field, ``created_at`` included, derives from the source item alone: the inbox
    fingerprints the whole body, so a repeat emit must be byte-for-byte the same event to be
    answered ``200 duplicate`` rather than ``422 id-conflict``.
    """

    id: str
    account_id: str
    created_at: str  # ISO 8601 UTC (``...Z``): when the item arose at the source
    recipient: Mapping[str, Any]
    reward_code: str
    reference: str
    quantity: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "reward.granted",
            "created_at": self.created_at,
            "account_id": self.account_id,
            "data": {
                "recipient": dict(self.recipient),
                "rewards": [{"reward_code": self.reward_code, "quantity": self.quantity}],
                "reference": self.reference,
            },
        }


def source_time(stamp: str) -> str:
    """A source's ``YYYY-MM-DD hh:mm:ss`` (UTC, no zone; Ignico and the orders platform) as
    an ISO 8601 ``...Z`` string; an unreadable stamp gives the Unix epoch (still fixed).
    """
    try:
        when = datetime.strptime(stamp.strip(), SOURCE_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        when = datetime.fromtimestamp(0, UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class Emitter(Protocol):
    """Delivers one event to the receiver; raises :class:`EmitError` if it was not taken."""

    def __call__(self, event: RewardEvent) -> EmitResult: ...


class HttpEmitter:
    """POST events to ``{receiver_url}/events``, signed with the first ``EVENT_SECRETS`` one.

    The first secret is the current one during a rotation (the edge accepts every listed
    secret), so producers sign with it.
    """

    def __init__(self, receiver_url: str, secret: str, *, http: httpx.Client | None = None) -> None:
        if not secret:
            raise ValueError("EVENT_SECRETS must hold a secret to sign source events")
        self._url = receiver_url.rstrip("/") + EVENTS_PATH
        self._secret = secret
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=EMIT_TIMEOUT)

    def __repr__(self) -> str:
        return f"HttpEmitter({self._url!r})"

    def __call__(self, event: RewardEvent) -> EmitResult:
        """Send one event; 202 → ACCEPTED, 200 → DUPLICATE.

        Raises:
            EmitError: the event was not taken; ``retryable`` unless refused for itself.
        """
        raw = json.dumps(event.to_json(), separators=(",", ":")).encode()
        headers = signed_headers(raw, self._secret, event.id, int(time.time()))
        try:
            response = self._http.post(self._url, content=raw, headers=headers)
        except httpx.TransportError as exc:
            raise EmitError(type(exc).__name__.lower()) from exc
        if response.status_code == 202:
            return EmitResult.ACCEPTED
        if response.status_code == 200:
            return EmitResult.DUPLICATE
        retryable = response.status_code not in ITEM_REFUSALS
        raise EmitError(
            _problem_type(response), status_code=response.status_code, retryable=retryable
        )

    def close(self) -> None:
        if self._owns_http:
            self._http.close()


def _problem_type(response: httpx.Response) -> str:
    """The edge's problem ``type`` slug (never the body, which may echo personal data)."""
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}"
    kind = body.get("type") if isinstance(body, dict) else None
    if isinstance(kind, str) and kind:
        return kind.rsplit("/", 1)[-1][:MAX_ERROR_DETAIL]
    return f"http_{response.status_code}"
