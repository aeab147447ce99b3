"""Checks shared by the retention and erasure tests: every value under a key prefix, of
every Redis type, as text (to prove an address is nowhere), and the bytes a set of keys
holds."""

from __future__ import annotations

from typing import Any

import redis


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def everything_under(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Key name → all of its content (members, fields, values, stream entries) as text."""
    out: dict[str, str] = {}
    for raw_key in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = _text(raw_key)
        kind = _text(client.type(key))
        parts: list[Any]
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "hash":
            parts = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == "list":
            parts = list(client.lrange(key, 0, -1))
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = list(client.zrange(key, 0, -1))
        elif kind == "stream":
            entries: list[Any] = client.xrange(key) or []
            parts = [item for _, fields in entries for pair in fields.items() for item in pair]
        else:
            raise AssertionError(f"unexpected type {kind} for {key}")
        out[key] = "\n".join(_text(part) for part in parts)
    return out


def traces_of(client: redis.Redis, prefix: str, needle: str) -> list[str]:
    """Keys whose name or content contains ``needle`` (case-insensitive)."""
    folded = needle.casefold()
    return [
        key
        for key, content in everything_under(client, prefix).items()
        if folded in key.casefold() or folded in content.casefold()
    ]
