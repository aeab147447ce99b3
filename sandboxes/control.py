"""Sandboxes, control client: drive a running sandbox's ``/_sandbox`` API from tests or tools.

Stage: test infrastructure shipped with the package. Tests, integration runs and chaos
benchmarks reset sandboxes, install fault rules and read the issue counters over HTTP (the
sandbox may live in another process), so the wire format stays in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

__all__ = ["SandboxControl"]

CONTROL_TIMEOUT_SECONDS = 5.0  # control calls are local and cheap


class SandboxControl:
    """Thin client for ``/_sandbox/*`` endpoints of one sandbox at ``url``."""

    def __init__(self, url: str, *, http: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=CONTROL_TIMEOUT_SECONDS)

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self._http.request(method, f"{self.url}/_sandbox{path}", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        self._call("POST", "/reset")

    def counters(self) -> dict[str, Any]:
        return self._call("GET", "/counters")

    def issued(self, key: str) -> int:
        """How many orders/redemptions were created for one idempotency key."""
        return int(self.counters()["issued"].get(key, 0))

    def set_faults(
        self, *rules: Mapping[str, Any], seed: int | None = None, append: bool = False
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"rules": [dict(rule) for rule in rules], "append": append}
        if seed is not None:
            body["seed"] = seed
        rules_out: list[dict[str, Any]] = self._call("POST", "/faults", body)["rules"]
        return rules_out

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def expire_tokens(self) -> int:
        return int(self._call("POST", "/tokens/expire")["expired"])

    def configure(self, **options: Any) -> dict[str, Any]:
        """RewardOps only: e.g. ``configure(delivery_delay=0)``."""
        return self._call("POST", "/config", options)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SandboxControl({self.url!r})"
