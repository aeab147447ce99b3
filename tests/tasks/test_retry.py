"""RetryPolicy: full-jitter exponential backoff, Retry-After as a floor, bounded rounds."""

from __future__ import annotations

import random

import pytest

from tasks.retry import RetryPolicy
from worker.config import Settings

SAMPLES = 400


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(
        base_seconds=2.0, max_delay_seconds=60.0, max_attempts=5, horizon_seconds=600
    )


def ceiling(attempt: int) -> float:
    return min(60.0, 2.0 * 2 ** (attempt - 1))


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 6, 10, 30])
def test_delay_stays_within_zero_and_capped_exponential_ceiling(policy, attempt):
    # given a seeded random source
    rng = random.Random(attempt)
    # when
    delays = [policy.delay(attempt, rng=rng) for _ in range(SAMPLES)]
    # then every delay is in [0, ceiling] and the jitter uses the whole range
    assert all(0.0 <= d <= ceiling(attempt) for d in delays)
    assert max(delays) > 0.9 * ceiling(attempt)
    assert min(delays) < 0.1 * ceiling(attempt)


def test_delay_ceiling_doubles_then_caps(policy):
    # given a seeded random source
    rng = random.Random(7)
    # when the largest of many delays is taken per attempt
    largest = [max(policy.delay(n, rng=rng) for _ in range(SAMPLES)) for n in range(1, 10)]
    # then it grows while below the cap (2, 4, 8, 16, 32) and then stays at the cap (60)
    assert largest[:5] == sorted(largest[:5])
    assert largest[4] < 32.0 < largest[5]
    assert all(55.0 < value <= 60.0 for value in largest[5:])


def test_same_seed_gives_same_delays(policy):
    # given two identically seeded random sources
    first, second = random.Random(42), random.Random(42)
    # when / then
    assert [policy.delay(3, rng=first) for _ in range(10)] == [
        policy.delay(3, rng=second) for _ in range(10)
    ]


@pytest.mark.parametrize("retry_after", [0.0, 5.0, 30.0, 3600.0])
def test_retry_after_is_a_floor_on_the_delay(policy, retry_after):
    # given a provider that asked us to wait
    rng = random.Random(1)
    # when
    delays = [policy.delay(2, retry_after=retry_after, rng=rng) for _ in range(SAMPLES)]
    # then we never come back sooner, but jitter may still wait longer
    assert all(d >= retry_after for d in delays)
    assert all(d <= max(retry_after, ceiling(2)) for d in delays)


def test_zero_max_delay_retries_immediately():
    # given a policy with no delay at all
    policy = RetryPolicy(
        base_seconds=2.0, max_delay_seconds=0.0, max_attempts=3, horizon_seconds=60
    )
    # when / then
    assert policy.delay(4, rng=random.Random(0)) == 0.0


@pytest.mark.parametrize(
    ("round_attempts", "exhausted"), [(1, False), (4, False), (5, True), (6, True)]
)
def test_exhausted_after_max_attempts(policy, round_attempts, exhausted):
    # given the first attempt just now and a retry well inside the horizon
    first = 1_000_000.0
    # when / then
    assert policy.exhausted(round_attempts, first, first + 10) is exhausted


@pytest.mark.parametrize(
    ("retry_in", "exhausted"), [(599.0, False), (600.0, False), (600.5, True), (5000.0, True)]
)
def test_exhausted_when_retry_would_fall_beyond_horizon(policy, retry_in, exhausted):
    # given one attempt so far, the first one 'retry_in' seconds before the planned retry
    first = 1_000_000.0
    # when / then
    assert policy.exhausted(1, first, first + retry_in) is exhausted


def test_horizon_is_not_checked_before_a_first_attempt(policy):
    # given no recorded first attempt (0)
    # when / then only the attempt count can exhaust
    assert policy.exhausted(1, 0.0, 10_000_000.0) is False


def test_policy_built_from_settings():
    # given settings
    settings = Settings(
        retry_base_seconds=0.5,
        retry_max_delay_seconds=9.0,
        retry_max_attempts=4,
        retry_horizon_seconds=99.0,
    )
    # when
    policy = RetryPolicy.from_settings(settings)
    # then
    assert policy == RetryPolicy(0.5, 9.0, 4, 99.0)


def test_delay_caps_for_very_large_attempt_numbers(policy):
    # given a long-running unit (RETRY_MAX_ATTEMPTS is unbounded)
    rng = random.Random(3)
    # when
    delay = policy.delay(2000, rng=rng)
    # then
    assert 0.0 <= delay <= 60.0
