"""Settings of the provider lanes and limits: defaults, and one-line errors naming them."""

from __future__ import annotations

import pytest

from tasks.lanes import breaker_policy, limits_for
from worker.config import Settings, SettingsError

MALFORMED = [
    ("LANE_BREAKER_FAILURES", "0"),
    ("LANE_BREAKER_FAILURES", "five"),
    ("LANE_BREAKER_ERROR_RATE", "1.5"),
    ("LANE_BREAKER_ERROR_RATE", "0"),
    ("LANE_BREAKER_WINDOW_SECONDS", "0.5"),
    ("LANE_BREAKER_MIN_CALLS", "0"),
    ("LANE_PROBE_SECONDS", "0"),
    ("LANE_FUNDS_PROBE_SECONDS", "nan"),
    ("LANE_RECHECK_SECONDS", "0.5"),
    ("LANE_TICK_SECONDS", "0"),
    ("LANE_MAX_WAIT_SECONDS", "-1"),
    ("IFEELGOODS_MAX_IN_FLIGHT", "-1"),
    ("IFEELGOODS_MAX_IN_FLIGHT", "1.5"),
    ("IFEELGOODS_RATE_PER_SECOND", "-0.1"),
    ("REWARDOPS_MAX_IN_FLIGHT", "many"),
    ("REWARDOPS_RATE_PER_SECOND", "inf"),
]


@pytest.mark.parametrize(("variable", "value"), MALFORMED)
def test_a_malformed_lane_setting_is_one_line_naming_it(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ") and "\n" not in str(caught.value)


def test_defaults_and_per_provider_limits() -> None:
    settings = Settings.from_env(
        {"REWARDOPS_RATE_PER_SECOND": "7.5", "REWARDOPS_MAX_IN_FLIGHT": "0"}
    )
    assert limits_for(settings, "ifeelgoods").max_in_flight == 100
    assert limits_for(settings, "ifeelgoods").rate_per_second == 200.0
    assert limits_for(settings, "rewardops").rate_per_second == 7.5
    assert limits_for(settings, "rewardops").max_in_flight == 0  # 0: no cap
    policy = breaker_policy(settings)
    assert (policy.consecutive_failures, policy.error_rate, policy.funds_probe_seconds) == (
        5,
        0.5,
        300.0,
    )
