"""Checks shared by the retention and erasure tests: every value under a key prefix, of
every Redis type, as text (to prove an address is nowhere), and the bytes a set of keys
holds."""

from __future__ import annotations

import redis


def everything_under(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Key name → all of its content (members, fields, values, stream entries) as text."""
    out: dict[str, str] = {}
    for raw_key in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw_key.decode()
        kind = client.type(key).decode()
        if kind == "string":
            parts: list[bytes] = [client.get(key) or b""]
        elif kind == "hash":
            parts = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == "list":
            parts = list(client.lrange(key, 0, -1))
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "zset":
            parts = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            parts = [
                item for _, fields in client.xrange(key) for pair in fields.items() for item in pair
            ]
        else:
            raise AssertionError(f"unexpected type {kind} for {key}")
        out[key] = "\n".join(part.decode(errors="replace") for part in parts)
    return out


def traces_of(client: redis.Redis, prefix: str, needle: str) -> list[str]:
    """Keys whose name or content contains ``needle`` (case-insensitive)."""
    folded = needle.casefold()
    return [
        key
        for key, content in everything_under(client, prefix).items()
        if folded in key.casefold() or folded in content.casefold()
    ]
