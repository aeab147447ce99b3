"""Sandboxes, fault injection: decide which simulated failure a sandbox request suffers.

Stage: test infrastructure shipped with the package. The provider sandboxes answer like the
real Ifeelgoods and RewardOps APIs; this module makes them misbehave on demand (latency, 5xx,
429, commit-then-timeout, 412 races, token expiry, permanent errors) so that every retry and
recovery path of the worker can be exercised against a real HTTP server. The JSON format of
a rule is documented in :mod:`sandboxes` (package docstring); this module parses and applies
it. It knows nothing about Flask or about either provider.
"""

from __future__ import annotations

import fnmatch
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "Fault",
    "FaultInjector",
    "FaultKind",
    "FaultRule",
    "FaultSpecError",
    "parse_fault",
    "parse_fault_header",
    "parse_rules",
]

DEFAULT_COMMIT_THEN_TIMEOUT_SECONDS = 2.0  # long enough for any sane client read timeout
DEFAULT_RETRY_AFTER_SECONDS = 1  # what a 429 asks the client to wait by default
MAX_LATENCY_MS = 60_000  # guards against a typo freezing a sandbox thread for hours


class FaultSpecError(ValueError):
    """A fault rule or an ``X-Sandbox-Fault`` header could not be understood."""


class FaultKind(StrEnum):
    """What happens to a request that a rule selects."""

    LATENCY = "latency"
    STATUS = "status"
    RATE_LIMIT = "rate_limit"
    COMMIT_THEN_TIMEOUT = "commit_then_timeout"
    PRECONDITION_RACE = "precondition_race"
    TOKEN_EXPIRED = "token_expired"
    PERMANENT = "permanent"
    # [DESIGN] A provider-side token bucket (providers.md 1.10 asks for a configurable one):
    # requests beyond ``per_second`` (bucket ``burst``) get a 429 with Retry-After.
    QUOTA = "quota"


# The parameter a shorthand header value ("status:502") sets, per kind.
_PRIMARY_PARAM: dict[FaultKind, str] = {
    FaultKind.LATENCY: "ms",
    FaultKind.STATUS: "status",
    FaultKind.RATE_LIMIT: "retry_after",
    FaultKind.COMMIT_THEN_TIMEOUT: "seconds",
    FaultKind.PRECONDITION_RACE: "bumps",
    FaultKind.PERMANENT: "status",
}


@dataclass(frozen=True)
class Fault:
    """One concrete misbehaviour, ready to be applied by a sandbox."""

    kind: FaultKind
    ms: int = 0
    status: int = 0
    body: bool = True
    retry_after: str = str(DEFAULT_RETRY_AFTER_SECONDS)
    seconds: float = DEFAULT_COMMIT_THEN_TIMEOUT_SECONDS
    bumps: int = 1
    error: str | None = None
    message: str | None = None
    per_second: float = 0.0
    burst: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "ms": self.ms,
            "status": self.status,
            "body": self.body,
            "retry_after": self.retry_after,
            "seconds": self.seconds,
            "bumps": self.bumps,
            "error": self.error,
            "message": self.message,
            "per_second": self.per_second,
            "burst": self.burst,
        }


@dataclass
class FaultRule:
    """Select requests by method and path glob, then inject ``fault``.

    ``times`` (exact sequence: the next N matching requests) and ``rate`` (probability per
    matching request) are mutually exclusive; with neither, every matching request is hit.
    ``skip`` lets the first N matching requests through untouched.
    """

    fault: Fault
    method: str = "*"
    path: str = "*"
    times: int | None = None
    rate: float | None = None
    skip: int = 0
    hits: int = field(default=0, compare=False)
    # A quota rule's bucket: tokens left and when they were last counted (monotonic).
    tokens: float | None = field(default=None, compare=False)
    counted_at: float = field(default=0.0, compare=False)

    def take_token(self, now: float) -> bool:
        """Quota rules: True when the bucket lets this request through (and spends a token)."""
        if self.tokens is None:
            self.tokens, self.counted_at = self.fault.burst, now
        elapsed = max(0.0, now - self.counted_at)
        self.tokens = min(self.fault.burst, self.tokens + elapsed * self.fault.per_second)
        self.counted_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def matches(self, method: str, path: str) -> bool:
        method_ok = self.method == "*" or self.method.upper() == method.upper()
        return method_ok and fnmatch.fnmatchcase(path, self.path)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "times": self.times,
            "rate": self.rate,
            "skip": self.skip,
            "hits": self.hits,
            **self.fault.to_json(),
        }


def _as_int(spec: Mapping[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FaultSpecError(f"{key} must be a number")
    try:
        number = int(float(value))
    except ValueError as exc:
        raise FaultSpecError(f"{key} must be a number") from exc
    if not low <= number <= high:
        raise FaultSpecError(f"{key} must be between {low} and {high}")
    return number


def _as_float(spec: Mapping[str, Any], key: str, default: float, *, high: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FaultSpecError(f"{key} must be a number")
    try:
        number = float(value)
    except ValueError as exc:
        raise FaultSpecError(f"{key} must be a number") from exc
    if not 0 <= number <= high:
        raise FaultSpecError(f"{key} must be between 0 and {high}")
    return number


def parse_fault(spec: Mapping[str, Any]) -> Fault:
    """Build a :class:`Fault` from its JSON form (see the :mod:`sandboxes` docstring).

    Raises:
        FaultSpecError: unknown kind or an out-of-range parameter.
    """
    try:
        kind = FaultKind(str(spec.get("kind", "")))
    except ValueError as exc:
        known = ", ".join(k.value for k in FaultKind)
        raise FaultSpecError(f"kind must be one of: {known}") from exc
    if kind is FaultKind.LATENCY:
        return Fault(kind, ms=_as_int(spec, "ms", 100, low=0, high=MAX_LATENCY_MS))
    if kind is FaultKind.STATUS:
        status = _as_int(spec, "status", 503, low=500, high=599)
        return Fault(kind, status=status, body=bool(spec.get("body", True)))
    if kind is FaultKind.RATE_LIMIT:
        raw = spec.get("retry_after", DEFAULT_RETRY_AFTER_SECONDS)
        # A string is sent verbatim, so tests can use the HTTP-date form as well.
        retry_after = (
            raw
            if isinstance(raw, str)
            else str(_as_int(spec, "retry_after", 1, low=0, high=86_400))
        )
        return Fault(kind, status=429, retry_after=retry_after)
    if kind is FaultKind.COMMIT_THEN_TIMEOUT:
        seconds = _as_float(spec, "seconds", DEFAULT_COMMIT_THEN_TIMEOUT_SECONDS, high=300.0)
        return Fault(kind, seconds=seconds)
    if kind is FaultKind.PRECONDITION_RACE:
        return Fault(kind, bumps=_as_int(spec, "bumps", 1, low=1, high=1000))
    if kind is FaultKind.TOKEN_EXPIRED:
        return Fault(kind, status=401)
    if kind is FaultKind.QUOTA:
        per_second = _as_float(spec, "per_second", 10.0, high=100_000.0)
        if per_second <= 0:
            raise FaultSpecError("per_second must be above 0")
        burst = _as_float(spec, "burst", max(1.0, per_second / 10), high=1_000_000.0)
        return Fault(kind, status=429, per_second=per_second, burst=max(1.0, burst))
    status = _as_int(spec, "status", 422, low=400, high=499)
    error = spec.get("error")
    message = spec.get("message")
    return Fault(
        kind,
        status=status,
        error=str(error) if error is not None else None,
        message=str(message) if message is not None else None,
    )


def parse_fault_header(value: str) -> Fault:
    """Parse ``X-Sandbox-Fault``: a JSON object, ``kind`` or ``kind:value`` shorthand.

    Examples: ``status:502``, ``rate_limit:3``, ``latency:250``, ``commit_then_timeout:1.5``,
    ``token_expired``, ``{"kind": "permanent", "status": 400, "error": "bad_request"}``.

    Raises:
        FaultSpecError: the header is malformed.
    """
    text = value.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise FaultSpecError("X-Sandbox-Fault is not valid JSON") from exc
        if not isinstance(spec, dict):
            raise FaultSpecError("X-Sandbox-Fault must be a JSON object")
        return parse_fault(spec)
    kind_text, _, arg = text.partition(":")
    spec_dict: dict[str, Any] = {"kind": kind_text.strip()}
    if arg:
        try:
            kind = FaultKind(kind_text.strip())
        except ValueError as exc:
            raise FaultSpecError(f"unknown fault kind {kind_text.strip()!r}") from exc
        param = _PRIMARY_PARAM.get(kind)
        if param is None:
            raise FaultSpecError(f"{kind.value} takes no argument")
        spec_dict[param] = arg.strip()
    return parse_fault(spec_dict)


def parse_rules(payload: Any) -> tuple[list[FaultRule], int | None, bool]:
    """Parse the body of ``POST /_sandbox/faults`` into rules, RNG seed and append flag.

    Raises:
        FaultSpecError: the body does not follow the documented format.
    """
    if not isinstance(payload, dict):
        raise FaultSpecError("body must be a JSON object with a 'rules' list")
    raw_rules = payload.get("rules")
    if not isinstance(raw_rules, list):
        raise FaultSpecError("'rules' must be a list")
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FaultSpecError("'seed' must be an integer")
    rules: list[FaultRule] = []
    for index, raw in enumerate(raw_rules):
        if not isinstance(raw, dict):
            raise FaultSpecError(f"rules[{index}] must be an object")
        try:
            rules.append(_parse_rule(raw))
        except FaultSpecError as exc:
            raise FaultSpecError(f"rules[{index}]: {exc}") from exc
    return rules, seed, bool(payload.get("append", False))


def _parse_rule(raw: Mapping[str, Any]) -> FaultRule:
    fault = parse_fault(raw)
    if raw.get("times") is not None and raw.get("rate") is not None:
        raise FaultSpecError("give either 'times' or 'rate', not both")
    times = _as_int(raw, "times", 0, low=1, high=1_000_000) if "times" in raw else None
    rate = _as_float(raw, "rate", 1.0, high=1.0) if "rate" in raw else None
    return FaultRule(
        fault=fault,
        method=str(raw.get("method", "*")),
        path=str(raw.get("path", "*")),
        times=times,
        rate=rate,
        skip=_as_int(raw, "skip", 0, low=0, high=1_000_000),
    )


class FaultInjector:
    """Thread-safe rule list with a seeded RNG, so probabilistic runs are reproducible."""

    def __init__(self, seed: int | None = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._rng = random.Random(seed)
        self.injected: Counter[str] = Counter()

    def set_rules(self, rules: list[FaultRule], *, seed: int | None = None, append: bool) -> None:
        with self._lock:
            self._rules = [*self._rules, *rules] if append else list(rules)
            if seed is not None:
                self._rng.seed(seed)

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def reset(self, seed: int | None = 0) -> None:
        with self._lock:
            self._rules = []
            self._rng.seed(seed)
            self.injected.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_json() for rule in self._rules]

    def pick(self, method: str, path: str, header: str | None = None) -> Fault | None:
        """Return the fault for this request, if any; a header fault wins over the rules.

        Raises:
            FaultSpecError: the ``X-Sandbox-Fault`` header is malformed.
        """
        if header:
            fault = parse_fault_header(header)
            with self._lock:
                self.injected[fault.kind.value] += 1
            return fault
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule.matches(method, path):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                if rule.rate is not None and self._rng.random() >= rule.rate:
                    continue
                if rule.fault.kind is FaultKind.QUOTA:
                    if rule.take_token(time.monotonic()):
                        continue
                    rule.hits += 1
                    self.injected[FaultKind.RATE_LIMIT.value] += 1
                    return Fault(FaultKind.RATE_LIMIT, status=429, retry_after="1")
                rule.hits += 1
                self.injected[rule.fault.kind.value] += 1
                return rule.fault
        return None
