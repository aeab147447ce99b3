"""Personal data in events: who an event is about, named by a keyed hash, and how to erase it.

Stage: the edge's inbox write (indexing) and erasure (worker stores). The edge names each
customer an event is about by the HMAC-SHA256, under the server key ``ERASURE_KEY``, of
their normalised email address or Coniq customer id; the inbox adds the event id to that
name's index set. An erasure request hashes the address the same way and finds the
customer's events without the store ever holding the address in clear (a keyed hash, so
someone reading Redis cannot test candidate addresses without the key).

Redaction keeps what audit and dedupe need (envelope, reward lines, references, ids) and
drops everything else in ``data``: an allow-list, so personal data in fields nobody
foresaw goes too.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from worker.config import Settings, SettingsError

__all__ = [
    "ERASED",
    "SubjectKind",
    "SubjectHasher",
    "hasher_for",
    "normalise",
    "redact_body",
    "redact_match",
    "scrub_text",
    "subjects_of",
]

ERASED = "[erased]"  # what replaces a value that held personal data
DIGEST_BYTES = 16  # 128 bits of HMAC-SHA256: no collisions among any real customer base
# Derivation label when ERASURE_KEY is unset: the key then comes from ADMIN_TOKEN.
_DERIVED_KEY_LABEL = b"rewardrelay erasure index v1"
# The fields an erased event keeps, per type: enough to audit what was issued and why.
_ENVELOPE_FIELDS = ("id", "type", "created_at", "account_id")
_KEPT_DATA = {
    "reward.granted": ("rewards", "reference"),
    "reward.issued": ("reward",),
}
_KEPT_LINE_FIELDS = ("reward_code", "quantity", "provider", "product")
_KEPT_REWARD_FIELDS = ("id", "offer_id", "name", "expiry_date")
# Unit match fields that are about the reward, never the person (routing keys).
KEPT_MATCH_FIELDS = frozenset({"offer_id", "reward_id", "reward_code", "provider", "product"})
MAX_WALK_NODES = 2_000  # bound the walk of one body (the edge already caps size and depth)


class SubjectKind(enum.StrEnum):
    EMAIL = "email"
    CUSTOMER_ID = "customer_id"  # Coniq's customer id


def normalise(kind: SubjectKind, value: str) -> str:
    """Emails compare case-insensitively and without surrounding blanks; ids as given."""
    stripped = value.strip()
    return stripped.casefold() if kind is SubjectKind.EMAIL else stripped


class SubjectHasher:
    """HMAC-SHA256 of a normalised subject under the server key, as 32 hex characters."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("empty erasure key")
        self._key = key

    def __repr__(self) -> str:
        return "SubjectHasher(***)"

    def digest(self, kind: SubjectKind, value: str) -> str:
        message = f"{kind.value}:{normalise(kind, value)}".encode()
        # hmac.digest: the one-shot C path, a few microseconds less per call at the edge.
        return hmac.digest(self._key, message, "sha256")[:DIGEST_BYTES].hex()


@functools.lru_cache(maxsize=8)
def _hasher(erasure_key: str, admin_token: str) -> SubjectHasher:
    if erasure_key:
        return SubjectHasher(erasure_key.encode())
    derived = hmac.new(admin_token.encode(), _DERIVED_KEY_LABEL, hashlib.sha256).digest()
    return SubjectHasher(derived)


def hasher_for(settings: Settings) -> SubjectHasher:
    """The deployment's hasher: ``ERASURE_KEY``, else a key derived from ``ADMIN_TOKEN``.

    Raises:
        SettingsError: neither is set.
    """
    if not settings.erasure_key and not settings.admin_token:
        raise SettingsError("ERASURE_KEY", "is required (or ADMIN_TOKEN to derive it from)")
    return _hasher(settings.erasure_key, settings.admin_token)


def subjects_of(source: str, event_type: str, document: Any) -> list[tuple[SubjectKind, str]]:
    """Who an event is about: every ``email`` string anywhere in ``data``, and for Coniq
    the customer id (``customer.id``, ``customer_id``, or ``data.id`` of ``customer.*``)."""
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        return []
    found: dict[tuple[SubjectKind, str], None] = {}
    coniq = source == "coniq"
    if coniq and event_type.startswith("customer.") and _is_id(data.get("id")):
        found[(SubjectKind.CUSTOMER_ID, str(data["id"]))] = None
    for key, value in _walk(data):
        if key == "email" and isinstance(value, str) and value.strip():
            found[(SubjectKind.EMAIL, value)] = None
        elif coniq and key == "customer_id" and _is_id(value):
            found[(SubjectKind.CUSTOMER_ID, str(value))] = None
        elif coniq and key == "customer" and isinstance(value, dict) and _is_id(value.get("id")):
            found[(SubjectKind.CUSTOMER_ID, str(value["id"]))] = None
    return list(found)


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and bool(value.strip())) or isinstance(value, int)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of the objects in ``node``, without recursion, bounded."""
    stack, seen = [node], 0
    while stack and seen < MAX_WALK_NODES:
        current = stack.pop()
        seen += 1
        if isinstance(current, dict):
            for key, value in current.items():
                yield key, value
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(item for item in current if isinstance(item, dict | list))


def redact_body(body: Mapping[str, Any], needles: Iterable[str]) -> dict[str, Any]:
    """The event with its personal data removed: the envelope, and of ``data`` only the
    reward lines and references (``reward.granted``) or the reward (``reward.issued``);
    any kept string that still contains a needle is replaced by ``[erased]``."""
    kept: dict[str, Any] = {name: body[name] for name in _ENVELOPE_FIELDS if name in body}
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    assert isinstance(data, dict)
    out: dict[str, Any] = {}
    for name in _KEPT_DATA.get(str(body.get("type", "")), ()):
        if name not in data:
            continue
        value = data[name]
        if name == "rewards" and isinstance(value, list):
            value = [_only(line, _KEPT_LINE_FIELDS) for line in value if isinstance(line, dict)]
        elif name == "reward" and isinstance(value, dict):
            value = _only(value, _KEPT_REWARD_FIELDS)
        out[name] = value
    out["erased"] = True
    kept["data"] = out
    scrubbed: dict[str, Any] = _scrub_tree(kept, [n.casefold() for n in needles])
    return scrubbed


def _only(item: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {name: item[name] for name in names if name in item}


def _scrub_tree(node: Any, needles: list[str]) -> Any:
    if isinstance(node, dict):
        return {key: _scrub_tree(value, needles) for key, value in node.items()}
    if isinstance(node, list):
        return [_scrub_tree(value, needles) for value in node]
    if isinstance(node, str) and _contains(node, needles):
        return ERASED
    return node


def redact_match(match: Mapping[str, str]) -> dict[str, str]:
    """A unit's routing match without fields about the person (``customer.*`` events match
    on the data's top-level scalars, which may be an email or a name)."""
    return {key: value for key, value in match.items() if key in KEPT_MATCH_FIELDS}


def _contains(text: str, needles: list[str]) -> bool:
    lowered = text.casefold()
    return any(needle and needle in lowered for needle in needles)


def scrub_text(text: str, needles: Iterable[str]) -> str | None:
    """``text`` with each needle (case-insensitive) replaced by ``[erased]``; None when no
    needle occurs (nothing to write back)."""
    folded = [needle.casefold() for needle in needles if needle]
    if not _contains(text, folded):
        return None
    if text.startswith(("{", "[")):
        try:
            return json.dumps(_scrub_tree(json.loads(text), folded), sort_keys=True)
        except ValueError:
            pass
    out, lowered = text, text.casefold()
    if len(lowered) != len(text):  # case folding changed the length: no safe positions
        return ERASED
    for needle in folded:
        start = lowered.find(needle)
        while start >= 0:
            out = out[:start] + ERASED + out[start + len(needle) :]
            lowered = lowered[:start] + ERASED.casefold() + lowered[start + len(needle) :]
            start = lowered.find(needle, start + len(ERASED))
    return out
