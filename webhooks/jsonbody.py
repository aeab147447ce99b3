"""The one way the edge reads JSON: strict text, then (for admin bodies) a schema.

``parse_strict`` is what ingest and the admin API both parse with: UTF-8, no duplicate
keys, no ``NaN``/``Infinity`` literals, no number that only fits as infinity (``1e400``),
bounded nesting. What Python's ``json`` would let through (infinities) would otherwise
reach code that cannot store it, as a 500 the sender retries forever.

``read_admin_body`` is the admin API's reader for request bodies, shared by every view
that takes one, in the order a client should fix things:

```
empty body          → the view's defaults, or 400 body-required
not application/json → 415 unsupported-media-type     (curl -d sends a form)
not strict JSON     → 400 malformed-json              (NUL byte, 1e400, NaN, ...)
not an object       → 422 validation-failed           (errors: {"body": ...})
schema              → 422 validation-failed           (errors name each field:
                                                       unknown keys, wrong types)
```
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import request
from marshmallow import Schema, ValidationError

from webhooks.errors import ProblemError

__all__ = [
    "JSON_MIMETYPE",
    "MAX_JSON_DEPTH",
    "MalformedJson",
    "parse_strict",
    "read_admin_body",
    "string_keys",
]

JSON_MIMETYPE = "application/json"
# Deepest JSON nesting accepted: deeper documents are abuse and would risk RecursionError.
MAX_JSON_DEPTH = 32


class MalformedJson(ValueError):
    """The text is not strict JSON; the message says why (no input echoed)."""


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise MalformedJson("duplicate object key")
    return document


def _reject_constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJson("a number is out of range (numbers must be finite)")
    return value


def parse_strict(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, finite numbers only, bounded nesting.

    Raises:
        MalformedJson: why the text was refused.
    """
    try:
        document = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise MalformedJson("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeError, int digit limits, ours
        raise MalformedJson(str(exc)) from None
    # Nesting needs an opening bracket per level: a body with few brackets (any reward
    # event) cannot be too deep, and counting bytes is far cheaper than walking the tree.
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets > MAX_JSON_DEPTH and _depth(document) > MAX_JSON_DEPTH:
        raise MalformedJson(f"nests deeper than {MAX_JSON_DEPTH} levels")
    return document


def _depth(document: Any) -> int:
    """Nesting depth of a parsed JSON document, without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: list[Any] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def malformed(exc: MalformedJson) -> ProblemError:
    return ProblemError(400, "malformed-json", f"The body is not valid JSON: {exc}.")


def read_admin_body(schema: Schema, *, empty: dict[str, Any] | None) -> dict[str, Any]:
    """The request's JSON object, loaded by ``schema`` (which refuses unknown keys).

    ``empty`` is what an empty body means, or None when a body is required (a
    destructive action that must say what it wants, ``{}`` for the defaults).

    Raises:
        ProblemError: 400 / 415 / 422 as in the module docstring.
    """
    raw = request.get_data(cache=True)
    if not raw:
        if empty is not None:
            return dict(empty)
        raise ProblemError(
            400, "body-required", "Send a JSON object as the body ({} for the defaults)."
        )
    if request.mimetype != JSON_MIMETYPE:
        raise ProblemError(
            415, "unsupported-media-type", f"The body must be {JSON_MIMETYPE} (a JSON object)."
        )
    try:
        document = parse_strict(raw)
    except MalformedJson as exc:
        raise malformed(exc) from None
    if not isinstance(document, dict):
        raise ProblemError(
            422,
            "validation-failed",
            "The body must be a JSON object.",
            errors={"body": ["Must be a JSON object."]},
        )
    try:
        loaded: dict[str, Any] = schema.load(document)
    except ValidationError as exc:
        fields = ", ".join(sorted(str(name) for name in _names(exc.messages)))
        raise ProblemError(
            422,
            "validation-failed",
            f"The body has invalid fields: {fields}; see errors.",
            errors=string_keys(exc.messages),
        ) from None
    return loaded


def _names(messages: Any) -> list[Any]:
    return list(messages) if isinstance(messages, dict) else ["body"]


def string_keys(messages: Any) -> Any:
    """Marshmallow keys list errors by int; JSON (and sorted dumps) want strings."""
    if isinstance(messages, dict):
        return {str(key): string_keys(value) for key, value in messages.items()}
    if isinstance(messages, list):
        return [string_keys(value) for value in messages]
    return messages
