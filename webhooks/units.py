"""Stage 4 of the edge flow: turn a validated event into the units to fulfil.

Each unit is one reward for one recipient, keyed ``{event id}:{line}:{index}``, so a
partial failure never re-issues the units that succeeded. The edge makes no provider
decision: it records the fields routing will match on (``offer_id``, ``reward_code``, or
an explicit ``provider`` + ``product``) and leaves the choice to the worker.

Also here: the canonical form of an event and its fingerprint, which the inbox compares
to tell a redelivery (same body) from a conflicting reuse of an id (other body).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tasks.routing import Rules
from webhooks.schemas import Event, RewardGranted, RewardIssued
from worker.stores.models import UnitSpec

__all__ = ["canonical_json", "fingerprint", "units_for", "scalar_fields"]

# Top-level fields copied into a generic unit's match, at most (bounded hash size).
MAX_MATCH_FIELDS = 32
# Longest value copied into a generic unit's match.
MAX_MATCH_VALUE_CHARS = 200


def canonical_json(document: Any) -> str:
    """Key-sorted, compact, ASCII JSON: equal documents give equal strings.

    ASCII escapes keep the result encodable even when the input held lone surrogates.
    """
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def fingerprint(canonical: str) -> str:
    """SHA-256 (hex) of an event's canonical JSON."""
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def scalar_fields(data: Mapping[str, Any]) -> dict[str, str]:
    """The top-level scalar fields of ``data`` as strings (how routing rules compare them)."""
    out: dict[str, str] = {}
    for key in sorted(data):
        value = data[key]
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = format(value, "d")
        elif isinstance(value, str | float):
            text = str(value)
        else:
            continue  # objects, lists and nulls are not matchable
        if len(text) <= MAX_MATCH_VALUE_CHARS:
            out[key] = text
        if len(out) >= MAX_MATCH_FIELDS:
            break
    return out


def units_for(source: str, event: Event, rules: Rules) -> list[UnitSpec]:
    """The units an event asks for, in a deterministic order.

    * Coniq ``reward.issued``: one unit matched on ``offer_id`` and ``reward_id``.
    * Internal ``reward.granted``: ``quantity`` units per line (index 0..quantity-1),
      matched on ``reward_code`` or ``provider`` + ``product``.
    * Anything else: one unit matched on the data's top-level scalars when some rule
      wants this (source, type); otherwise none (the event is recorded, nothing to do).
    """
    data = event.data
    if isinstance(data, RewardIssued):
        match = {"offer_id": data.reward.offer_id, "reward_id": data.reward.id}
        return [UnitSpec(line=0, index=0, match=match)]
    if isinstance(data, RewardGranted):
        return [
            UnitSpec(line=line, index=index, match=reward.match())
            for line, reward in enumerate(data.rewards)
            for index in range(reward.quantity)
        ]
    if rules.wants(source, event.type):
        return [UnitSpec(line=0, index=0, match=scalar_fields(data))]
    return []
