"""Hypothesis strategies for the fuzz suite: valid event envelopes and mutations of them.

``coniq_reward_issued()`` and ``internal_reward_granted()`` draw events that the
contract (DESIGN.md "Events", ``webhooks/schemas.py``) says must be accepted: every
optional field present or absent, ids as strings or integers, unknown fields where Coniq's
lenient format allows them, any Unicode (lone surrogates included, which JSON can carry
as ``\\udxxx`` escapes) in free text. ``mutated(event)`` replaces, deletes or adds one
node anywhere in such an event.
"""

from __future__ import annotations

import copy
import json
import math
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from webhooks.schemas import MAX_QUANTITY, MAX_TEXT_CHARS, MAX_UNITS_PER_EVENT

PROVIDERS = ("ifeelgoods", "rewardops")
CONIQ_OTHER_TYPES = (
    "offer.redeemed",
    "transaction.created",
    "points.updated",
    "customer.created",
    "customer.updated",
    "subscription.cancelled",
)
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))

# Any code point, lone surrogates included (json.dumps escapes them, json.loads restores).
_any_char = st.characters(exclude_categories=())
any_text = st.text(_any_char, max_size=30)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)


def _text(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    """Free text the schemas accept: any characters, within the length limits."""
    return st.text(_any_char, min_size=min_size, max_size=min(max_size, MAX_TEXT_CHARS))


def _long_text() -> st.SearchStrategy[str]:
    """Text right at the length limit (the boundary the schemas draw)."""
    return st.text(_any_char, min_size=MAX_TEXT_CHARS, max_size=MAX_TEXT_CHARS)


text = _text() | _long_text()
optional_text = st.none() | _text(min_size=0)

event_ids = st.text(_PRINTABLE, min_size=1, max_size=200)
# A Coniq id: a non-blank string or any integer (booleans are not ids).
ids = st.integers(min_value=-(10**18), max_value=10**18) | _text().filter(
    lambda value: value.strip() != ""
)

_ALNUM = string.ascii_letters + string.digits
_ATOM = _ALNUM + "!#$%&'*+/=?^_`{|}~-"
_label = st.builds(
    "{}{}".format, st.text(_ALNUM, min_size=1, max_size=1), st.text(_ALNUM + "-", max_size=20)
).map(lambda label: label.rstrip("-") or "x")
emails = st.builds(
    "{}@{}.{}".format,
    st.lists(st.text(_ATOM, min_size=1, max_size=12), min_size=1, max_size=3).map(".".join),
    st.lists(_label, min_size=1, max_size=3).map(".".join),
    st.text(string.ascii_lowercase, min_size=2, max_size=10),
)

_offsets = (
    st.none()
    | st.just(UTC)
    | st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
)


@st.composite
def iso_datetimes(draw: st.DrawFn) -> str:
    """An ISO 8601 date-time, naive or with an offset, ``Z`` spelling included."""
    moment = draw(
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1))
    ).replace(tzinfo=draw(_offsets))
    spelled = moment.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds", "auto"])))
    if spelled.endswith("+00:00") and draw(st.booleans()):
        spelled = spelled[: -len("+00:00")] + "Z"
    return spelled


dates = st.dates(min_value=datetime(1970, 1, 1).date()).map(lambda day: day.isoformat())
account_ids = text
# Unknown fields for Coniq's lenient objects: names that cannot collide with known ones.
_extras = st.dictionaries(
    st.text(string.ascii_lowercase, min_size=1).map("x_".__add__), json_values, max_size=3
)


def _optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


@st.composite
def _with_extras(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    document = draw(base)
    return {**draw(_extras), **document}


def _envelope(event_type: st.SearchStrategy[str], data: st.SearchStrategy[Any]) -> Any:
    return st.fixed_dictionaries(
        {
            "id": event_ids,
            "type": event_type,
            "created_at": iso_datetimes(),
            "account_id": account_ids,
            "data": data,
        }
    )


def coniq_reward_issued() -> st.SearchStrategy[dict[str, Any]]:
    """A valid Coniq ``reward.issued`` envelope."""
    customer = _with_extras(
        st.fixed_dictionaries(
            {"id": ids, "email": emails},
            optional={"first_name": optional_text, "last_name": optional_text},
        )
    )
    subscription = st.none() | _with_extras(
        st.fixed_dictionaries({"id": ids}, optional={"program_id": st.none() | ids})
    )
    reward = _with_extras(
        st.fixed_dictionaries(
            {"id": ids, "offer_id": ids},
            optional={
                "name": optional_text,
                "expiry_date": st.none() | dates | iso_datetimes(),
            },
        )
    )
    data = _with_extras(
        st.fixed_dictionaries(
            {"customer": customer, "reward": reward}, optional={"subscription": subscription}
        )
    )
    return _envelope(st.just("reward.issued"), data)


def coniq_other() -> st.SearchStrategy[dict[str, Any]]:
    """A valid Coniq event of a type that is recorded, not fulfilled: data is any object."""
    return _envelope(
        st.sampled_from(CONIQ_OTHER_TYPES), st.dictionaries(any_text, json_values, max_size=4)
    )


@st.composite
def _reward_lines(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1..n lines whose quantities sum to at most MAX_UNITS_PER_EVENT."""
    count = draw(st.integers(1, 6))
    budget = MAX_UNITS_PER_EVENT
    lines: list[dict[str, Any]] = []
    for position in range(count):
        remaining_lines = count - position - 1
        most = min(MAX_QUANTITY, budget - remaining_lines)
        if draw(st.booleans()):
            line: dict[str, Any] = {"reward_code": draw(text)}
        else:
            line = {
                "provider": draw(st.sampled_from(PROVIDERS)),
                "product": draw(
                    st.builds(
                        "{}/{}".format,
                        st.text(string.digits, min_size=1, max_size=18),
                        st.text(_PRINTABLE, min_size=1, max_size=100),
                    )
                ),
            }
        if draw(st.booleans()):
            quantity = draw(st.integers(1, most))
            line["quantity"] = quantity
        else:
            quantity = 1  # the default
        budget -= quantity
        lines.append(line)
    return lines


def internal_reward_granted() -> st.SearchStrategy[dict[str, Any]]:
    """A valid internal ``reward.granted`` envelope (strict schema: no unknown fields)."""
    recipient = st.fixed_dictionaries(
        {"email": emails, "first_name": text, "last_name": text},
        optional={
            "address": st.none() | any_text | st.dictionaries(any_text, json_values, max_size=4),
        },
    )
    data = st.fixed_dictionaries(
        {"recipient": recipient, "rewards": _reward_lines(), "reference": text}
    )
    return _envelope(st.just("reward.granted"), data)


def valid_events() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """``(source, event)`` for any valid event of either source."""
    return st.one_of(
        st.tuples(st.just("coniq"), coniq_reward_issued()),
        st.tuples(st.just("coniq"), coniq_other()),
        st.tuples(st.just("internal"), internal_reward_granted()),
    )


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, event: Any) -> Any:
    """``event`` with one node replaced by random JSON, deleted, or given a new sibling."""
    path = draw(st.sampled_from(_paths(event)))
    if not path:
        return draw(json_values)
    document = copy.deepcopy(event)
    parent: Any = document
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(json_values)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(any_text)] = draw(json_values)
    else:
        parent.insert(path[-1], draw(json_values))
    return document


# --- JSON text json.dumps would never write ----------------------------------------------

# Tokens Python's json.loads takes (or half-takes) but strict JSON, or our store, cannot:
# numbers that only fit as infinity, the NaN/Infinity literals, and numbers at the edge of
# what parses at all (ints near Python's digit limit, tiny/huge but finite floats).
NON_FINITE_TOKENS = ("1e400", "-1e400", "1E+999", "-0.5e99999", "NaN", "Infinity", "-Infinity")
odd_number_tokens = st.one_of(
    st.sampled_from(NON_FINITE_TOKENS),
    st.integers(1, 5000).map(lambda digits: "9" * digits),  # past 4300 digits: refused
    st.sampled_from(["1e308", "-1e-400", "0e0", "-0", "1.0e-5", "123456789012345678901234567890"]),
)
# Whole documents that are not a JSON object of reasonable shape.
odd_documents = st.one_of(
    st.integers(1, 200).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 200).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.sampled_from(["", " ", "null", "[]", '""', "0", "{", '{"a":1,"a":2}', "\x00", "{}\x00"]),
)
_MARK = "\x00hostile\x00"


@st.composite
def hostile_json_text(draw: st.DrawFn, document: Any) -> tuple[bytes, str]:
    """``document`` as JSON text with one value replaced by a raw token, or a whole odd
    document; returns ``(bytes, token)`` (``token`` "" for a whole odd document).

    The token is spliced into the text after ``json.dumps``, so the result can hold what
    no serialiser writes: ``1e400``, ``NaN``, a 5000-digit integer, raw NUL bytes.
    """
    if draw(st.integers(0, 5)) == 0:
        return draw(odd_documents).encode(), ""
    paths = [path for path in _paths(document) if path]
    if not paths:
        return draw(odd_documents).encode(), ""
    path = draw(st.sampled_from(paths))
    marked = copy.deepcopy(document)
    parent: Any = marked
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = _MARK
    token = draw(odd_number_tokens | st.just('"a\x00b"'))
    text = json.dumps(marked).replace(json.dumps(_MARK), token, 1)
    return text.encode(), token


def is_non_finite(token: str) -> bool:
    """Would JSON read ``token`` as NaN or an infinity (what strict parsing refuses)?

    An integer token is exact in JSON whatever its size, so never non-finite here.
    """
    if token.lstrip("-").isdigit():
        return False
    return float_is_non_finite(token)


def float_is_non_finite(text: str) -> bool:
    """Would ``float(text)`` (how a query value is read) be NaN or an infinity?"""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False
