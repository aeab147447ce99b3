"""The ``quota`` fault: a provider-side token bucket answering 429 beyond its rate."""

from __future__ import annotations

import time

import pytest

from sandboxes import FaultKind, FaultSpecError
from sandboxes.faults import FaultInjector, parse_rules


def _injector(**fields) -> FaultInjector:
    rules, _seed, _append = parse_rules({"rules": [{"kind": "quota", **fields}]})
    injector = FaultInjector()
    injector.set_rules(rules, append=False)
    return injector


def test_requests_beyond_the_burst_are_rate_limited_then_tokens_refill() -> None:
    injector = _injector(per_second=20, burst=3)
    picks = [injector.pick("POST", "/x") for _ in range(5)]
    assert [p.kind if p else None for p in picks] == [
        None,
        None,
        None,
        FaultKind.RATE_LIMIT,
        FaultKind.RATE_LIMIT,
    ]
    assert picks[3] is not None and picks[3].status == 429 and picks[3].retry_after == "1"
    assert injector.injected == {"rate_limit": 2}
    time.sleep(0.11)  # two tokens at 20/s
    assert injector.pick("POST", "/x") is None
    assert injector.pick("POST", "/x") is None
    assert injector.pick("POST", "/x") is not None


def test_a_paced_client_at_the_rate_is_never_limited() -> None:
    injector = _injector(per_second=100, burst=2)
    limited = 0
    for _ in range(50):
        limited += injector.pick("GET", "/y") is not None
        time.sleep(0.0105)
    assert limited == 0


def test_quota_needs_a_positive_rate() -> None:
    with pytest.raises(FaultSpecError):
        parse_rules({"rules": [{"kind": "quota", "per_second": 0}]})
