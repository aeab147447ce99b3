"""HTTP clients, redaction: value types that keep secrets and reward codes out of output.

Shared by providers and sources (worker side). Reward codes are money and API secrets are
keys to money; the design promises neither appears in logs, exception messages, reprs,
Celery arguments or Sentry events. Wrapping them in types whose ``repr``/``str`` are
masked makes the safe thing the default: only an explicit ``.reveal()`` gives the value back.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "MAX_MESSAGE_LENGTH", "RewardCode", "Secret", "mask", "redact_message"]

MASK = "****"
VISIBLE_TAIL = 4  # characters shown at the end of a masked value
MIN_LENGTH_FOR_TAIL = 8  # shorter values are masked entirely (a tail would be most of them)


MAX_MESSAGE_LENGTH = 160  # a provider's sentence fits; a payload dump does not
# What a provider message may quote that must not be kept: e-mail addresses, phone numbers,
# secret-shaped key=value pairs and bearer values, and any word of 6+ characters holding a
# digit (reward codes, PINs, tokens, card and order numbers). Short numbers (a status, a
# promotion id) and plain words stay, so the sentence still says what went wrong.
_SENSITIVE = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?i:bearer|basic)\s+\S+"
    r"|(?i:secret|token|password|api[_-]?key|code|pin)[\"']?\s*[:=]\s*[\"']?[^\s\"',;]+"
    r"|\+?\d[\d ().-]{7,}\d"
    r"|\b(?=[\w-]*\d)[\w-]{6,}\b"
)
REDACTED = "[redacted]"


def redact_message(text: str | None) -> str:
    """A provider's own error message, safe to keep in a dead letter and show operators.

    One line, anything code-, token- or person-shaped replaced by ``[redacted]``, at most
    ``MAX_MESSAGE_LENGTH`` characters (cut after redaction, so no half value survives).
    """
    if not text:
        return ""
    line = " ".join(text.split())
    redacted = _SENSITIVE.sub(REDACTED, line)
    if len(redacted) <= MAX_MESSAGE_LENGTH:
        return redacted
    return redacted[: MAX_MESSAGE_LENGTH - 1].rstrip() + "…"


def mask(value: str) -> str:
    """``ABCD-1234-WXYZ`` → ``****WXYZ``; values shorter than 8 characters → ``****``."""
    if len(value) < MIN_LENGTH_FOR_TAIL:
        return MASK
    return MASK + value[-VISIBLE_TAIL:]


class RewardCode:
    """A reward code (gift card number, PIN, redemption link) that never prints itself.

    ``repr`` gives ``RewardCode('****1234')``; ``str`` gives ``****1234``. Use
    :meth:`reveal` only where the value must leave the process (ledger storage, the API
    response to the member).
    """

    __slots__ = ("_value", "label")

    def __init__(self, value: str, label: str | None = None) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a reward code must be a non-empty string")
        self._value = value
        self.label = label

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        return mask(self._value)

    def __repr__(self) -> str:
        return f"RewardCode({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RewardCode):
            return NotImplemented
        return self._value == other._value and self.label == other.label

    def __hash__(self) -> int:
        return hash((self._value, self.label))


class Secret:
    """A credential (API secret, client secret, bearer token) with a masked repr.

    Clients store credentials as ``Secret`` so a debugger, a Sentry frame dump of
    ``self`` or an accidental ``%r`` shows ``Secret('****')`` instead of the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self._value == other._value

    def __hash__(self) -> int:
        return hash(self._value)
