"""Settings of the reward sources and the Coniq loop-back: one-line errors naming the
variable, no secret in them, and the routing check of each source's reward code."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from tasks.routing import load_rules
from tasks.runtime import check_source_settings
from worker.config import DEFAULT_RULES_FILE, Settings, SettingsError

IGNICO = {
    "IGNICO_BASE_URL": "https://acme.igni.co/api/v1",
    "IGNICO_CLIENT_ID": "ignico-client",
    "IGNICO_CLIENT_SECRET": "ignico-secret-d00d",
}
ORDERS = {
    "ORDERS_BASE_URL": "https://orders.example.com",
    "ORDERS_CLIENT_ID": "orders-client",
    "ORDERS_CLIENT_SECRET": "orders-secret-f00d",
}


def test_sources_are_off_by_default() -> None:
    # given / when
    settings = Settings.from_env({})
    # then
    assert not settings.ignico_configured and not settings.orders_configured
    assert not settings.coniq_outbound_configured


def test_configured_sources_are_parsed() -> None:
    # given
    env = {**IGNICO, **ORDERS, "ORDERS_MIN_TOTAL": "75.50", "SOURCE_PAGE_SIZE": "50"}
    # when
    settings = Settings.from_env(env)
    # then
    assert settings.ignico_configured and settings.orders_configured
    assert settings.orders_min_total == Decimal("75.50") and settings.source_page_size == 50
    assert "ignico-secret-d00d" not in repr(settings)
    assert settings.redacted()["IGNICO_CLIENT_SECRET"] == "***"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({**IGNICO, "IGNICO_CLIENT_SECRET": ""}, "IGNICO_CLIENT_SECRET"),
        ({**IGNICO, "IGNICO_BASE_URL": ""}, "IGNICO_BASE_URL"),
        ({**IGNICO, "IGNICO_BASE_URL": "ftp://acme.igni.co"}, "IGNICO_BASE_URL"),
        ({**ORDERS, "ORDERS_CLIENT_SECRET": ""}, "ORDERS_CLIENT_SECRET"),
        ({"ORDERS_MIN_TOTAL": "lots"}, "ORDERS_MIN_TOTAL"),
        ({"ORDERS_MIN_TOTAL": "-1"}, "ORDERS_MIN_TOTAL"),
        ({"SOURCE_POLL_SECONDS": "0"}, "SOURCE_POLL_SECONDS"),
        ({"RECEIVER_URL": "not a url"}, "RECEIVER_URL"),
        ({"CONIQ_API_KEY": "coniq-key-secret-1"}, "CONIQ_RECORD_OFFER_ID"),
    ],
)
def test_bad_source_setting_gives_one_line_naming_it(env: dict[str, str], variable: str) -> None:
    # given / when
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    # then
    assert caught.value.variable == variable
    message = str(caught.value)
    assert "\n" not in message
    assert not [v for v in env.values() if "secret" in v and v in message]


def test_a_source_reward_code_no_rule_routes_is_refused() -> None:
    # given
    settings = replace(Settings.from_env(IGNICO), ignico_reward_code="NO-SUCH-CODE")
    # when / then
    with pytest.raises(SettingsError) as caught:
        check_source_settings(settings, load_rules(DEFAULT_RULES_FILE))
    assert caught.value.variable == "IGNICO_REWARD_CODE"


def test_default_source_reward_codes_are_routed_by_the_example_rules() -> None:
    # given
    settings = replace(Settings.from_env({**IGNICO, **ORDERS}), event_secrets=("whsec_x",))
    # when / then: no error
    check_source_settings(settings, load_rules(DEFAULT_RULES_FILE))
