"""Ledger vocabulary: unit ids, unit states, attempt outcomes and the typed view of a unit."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["UnitId", "UnitState", "AttemptOutcome", "TERMINAL_STATES", "UnitSpec", "Unit"]


@dataclass(frozen=True)
class UnitId:
    """A unit's deterministic key ``{event id}:{line}:{index}``, built and parsed only here.

    Event ids may themselves contain ``:``; line and index never do, so the key is split
    from the right.
    """

    event_id: str
    line: int
    index: int

    def __str__(self) -> str:
        return f"{self.event_id}:{self.line}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> UnitId:
        """Raises ValueError when ``text`` is not ``{event id}:{line}:{index}``."""
        event_id, line, index = text.rsplit(":", 2)
        if not event_id or not line.isdigit() or not index.isdigit():
            raise ValueError(f"not a unit id: {text!r}")
        return cls(event_id, int(line), int(index))


class UnitState(enum.StrEnum):
    """Where one reward unit is on its way to the customer."""

    PENDING = "pending"  # accepted at the edge, not yet picked up by a worker
    SUBMITTING = "submitting"  # a worker holds the lease and may be talking to the provider
    RETRYING = "retrying"  # a transient failure; next attempt scheduled in the ledger
    UNKNOWN = "unknown"  # the provider may have committed; look up by key before resubmitting
    AWAITING_DELIVERY = "awaiting_delivery"  # provider accepted the order, delivery pending
    FULFILLED = "fulfilled"
    DEAD_LETTERED = "dead_lettered"
    UNROUTABLE = "unroutable"  # no routing rule matched; visible to operators
    IGNORED = "ignored"  # a recorded event type that no rule asks us to act on


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended, as kept in the unit's attempt history."""

    FULFILLED = "fulfilled"
    AWAITING = "awaiting"  # the provider accepted; delivery is polled
    RETRY = "retry"  # transient failure, next attempt scheduled
    UNKNOWN = "unknown"  # the provider may have committed: look up before resubmitting
    IGNORED = "ignored"
    UNROUTABLE = "unroutable"
    DEAD_LETTER = "dead_letter"
    # Provider lanes (tasks/lanes.py): the attempt was handed back, no budget spent.
    LANE_WAIT = "lane-wait"  # the answer closed the lane (or it was closed): wait there
    LANE_THROTTLED = "lane-throttled"  # a 429: the whole lane slowed down


TERMINAL_STATES = frozenset(
    {UnitState.FULFILLED, UnitState.DEAD_LETTERED, UnitState.UNROUTABLE, UnitState.IGNORED}
)


@dataclass(frozen=True)
class UnitSpec:
    """What the edge knows about one unit: enough for routing, no provider decision."""

    line: int
    index: int
    match: dict[str, str] = field(default_factory=dict)

    def unit_id(self, event_id: str) -> str:
        """The deterministic unit key (see :class:`UnitId`)."""
        return str(UnitId(event_id, self.line, self.index))


@dataclass(frozen=True)
class Unit:
    """A typed read of a unit's ledger hash."""

    id: str
    event_id: str
    source: str
    event_type: str
    state: UnitState
    attempts: int
    match: dict[str, str]
    provider: str = ""
    provider_ref: str = ""
    route: dict[str, Any] = field(default_factory=dict)
    last_error: dict[str, Any] = field(default_factory=dict)
    next_attempt_at: float = 0.0
    first_attempt_at: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    dead_letter_id: str = ""
    has_codes: bool = False
    # Attempts a provider lane handed back (paused, broken, throttled): no call was made.
    set_asides: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def provider_attempts(self) -> int:
        """Attempts that went to the provider: ``attempts`` numbers every begin (it fences
        a stale worker's writes), including those a lane handed back without a call."""
        return max(0, self.attempts - self.set_asides)

    @classmethod
    def from_hash(cls, unit_id: str, raw: dict[str, str]) -> Unit:
        return cls(
            id=unit_id,
            event_id=raw.get("event_id", ""),
            source=raw.get("source", ""),
            event_type=raw.get("event_type", ""),
            state=UnitState(raw.get("state", UnitState.PENDING)),
            attempts=int(raw.get("attempts", "0")),
            match=json.loads(raw.get("match") or "{}"),
            provider=raw.get("provider", ""),
            provider_ref=raw.get("provider_ref", ""),
            route=json.loads(raw.get("route") or "{}"),
            last_error=json.loads(raw.get("last_error") or "{}"),
            next_attempt_at=float(raw.get("next_attempt_at") or 0),
            first_attempt_at=float(raw.get("first_attempt_at") or 0),
            created_at=float(raw.get("created_at") or 0),
            updated_at=float(raw.get("updated_at") or 0),
            dead_letter_id=raw.get("dead_letter_id", ""),
            has_codes=bool(raw.get("codes")),
            set_asides=int(raw.get("set_asides") or 0),
        )
