"""Decoding helpers: redis-py returns bytes; the stores speak str."""

from __future__ import annotations

from typing import Any

__all__ = ["text", "text_map"]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def text_map(raw: Any) -> dict[str, str]:
    return {text(k): text(v) for k, v in dict(raw).items()}
