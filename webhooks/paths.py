"""URLs built from ids: one quoting rule for the edge and the command line.

Event ids are any printable ASCII (``%``, ``#``, ``?`` and ``/`` included), and a unit or
dead-letter id is ``{event id}:{line}:{index}``. Put into a URL as they are, such ids
point elsewhere (``#`` ends the path, ``?`` starts a query, ``%41`` reads as ``A``), so
every URL the edge (``Location``) or ``rewardrelay`` builds from an id quotes it here as one
path segment. The routes that read an id (``<path:...>``) accept the quoted form:
werkzeug decodes it back before routing.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["dead_letter_path", "fulfillment_path", "quote_id"]


def quote_id(value: str) -> str:
    """``value`` as one URL path segment: every reserved character percent-encoded.

    ``.`` and ``..`` alone are dot-segments that clients resolve away, so their dots are
    encoded too.
    """
    quoted = quote(value, safe="")
    if quoted in (".", ".."):
        return quoted.replace(".", "%2E")
    return quoted


def fulfillment_path(event_id: str) -> str:
    """``/fulfillments/{event id}``, the admin API's view of an accepted event."""
    return "/fulfillments/" + quote_id(event_id)


def dead_letter_path(letter_id: str, action: str = "") -> str:
    """``/dead-letters/{id}`` or ``/dead-letters/{id}/{action}`` (``replay``)."""
    path = "/dead-letters/" + quote_id(letter_id)
    return f"{path}/{action}" if action else path
