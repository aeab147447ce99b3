"""Settings.from_env: defaults, one-line errors naming the variable, require, redaction."""

from __future__ import annotations

import json

import pytest

from worker.config import DEFAULT_RULES_FILE, Settings, SettingsError

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_dGVzdC1pbnRlcm5hbC1ldmVudHMtc2VjcmV0"
SECRET_C = "whsec_c2Vjb25kLXJvdGF0ZWQtc2VjcmV0LXZhbHVl"

# Every variable Settings.from_env reads, with a valid value.
FULL_ENV = {
    "REDIS_URL": "redis://cache.internal:6379/0",
    "CELERY_BROKER_URL": "amqp://guest@rabbit.internal:5672//",
    "RR_KEY_PREFIX": "rr-prod",
    "CONIQ_WEBHOOK_SECRETS": f"{SECRET_A} {SECRET_B}",
    "EVENT_SECRETS": SECRET_C,
    "WEBHOOK_TOLERANCE_SECONDS": "120",
    "MAX_BODY_BYTES": "65536",
    "IFEELGOODS_BASE_URL": "https://sandbox.ifeelgoods.com/fulfillment/v2/",
    "IFEELGOODS_API_KEY": "ifg-key-0f3a9c",
    "IFEELGOODS_API_SECRET": "ifg-secret-77d1e2",
    "REWARDOPS_BASE_URL": "https://sandbox.rewardops.net/api/v4",
    "REWARDOPS_CLIENT_ID": "ro-client-4b2e",
    "REWARDOPS_CLIENT_SECRET": "ro-secret-9c8d7e",
    "RULES_FILE": str(DEFAULT_RULES_FILE),
    "ADMIN_TOKEN": "admin-token-abcdefghijklmnop",
    "SENTRY_DSN": "https://sentrypublickey123@o1.ingest.sentry.io/42",
    "LOG_FORMAT": "json",
    "SENTRY_ENVIRONMENT": "staging",
    "PROVIDER_TIMEOUT_SECONDS": "7.5",
    "RETRY_BASE_SECONDS": "1",
    "RETRY_MAX_DELAY_SECONDS": "300",
    "RETRY_MAX_ATTEMPTS": "12",
    "RETRY_HORIZON_SECONDS": "7200",
    "UNIT_STALE_SECONDS": "30",
    "SWEEP_INTERVAL_SECONDS": "2",
    "TASK_LEASE_SECONDS": "90",
    "WORKER_CONCURRENCY": "32",
    "WORKER_POOL": "prefork",
    "WORKER_PROCESSES": "3",
    "DELIVERY_POLL_SECONDS": "1.5",
}

SECRET_VARIABLES = (
    "CONIQ_WEBHOOK_SECRETS",
    "EVENT_SECRETS",
    "IFEELGOODS_API_KEY",
    "IFEELGOODS_API_SECRET",
    "REWARDOPS_CLIENT_ID",
    "REWARDOPS_CLIENT_SECRET",
    "ADMIN_TOKEN",
    "SENTRY_DSN",
)

MALFORMED = [
    ("REDIS_URL", "localhost:6379"),
    ("REDIS_URL", "http://cache.internal:6379"),
    ("REDIS_URL", "redis://"),
    ("CELERY_BROKER_URL", "kafka://broker:9092"),
    ("CELERY_BROKER_URL", "amqp://"),
    ("RR_KEY_PREFIX", "has space"),
    ("RR_KEY_PREFIX", "x" * 41),
    ("CONIQ_WEBHOOK_SECRETS", "not-a-secret"),
    ("CONIQ_WEBHOOK_SECRETS", f"{SECRET_A} whsec_"),
    ("EVENT_SECRETS", "whsec_short"),
    ("WEBHOOK_TOLERANCE_SECONDS", "five"),
    ("WEBHOOK_TOLERANCE_SECONDS", "0"),
    ("WEBHOOK_TOLERANCE_SECONDS", "1.5"),
    ("MAX_BODY_BYTES", "100"),
    ("MAX_BODY_BYTES", "big"),
    ("IFEELGOODS_BASE_URL", "ftp://api.ifeelgoods.com"),
    ("IFEELGOODS_BASE_URL", "api.ifeelgoods.com/fulfillment/v2"),
    ("REWARDOPS_BASE_URL", "https://"),
    ("RULES_FILE", "/nonexistent/rules.toml"),
    ("RULES_FILE", "/"),
    ("ADMIN_TOKEN", "too-short"),
    ("SENTRY_DSN", "not a url"),
    ("LOG_FORMAT", "xml"),
    ("SENTRY_ENVIRONMENT", "my staging"),
    ("SENTRY_ENVIRONMENT", "eu/staging"),
    ("SENTRY_ENVIRONMENT", "x" * 65),
    ("PROVIDER_TIMEOUT_SECONDS", "0"),
    ("PROVIDER_TIMEOUT_SECONDS", "fast"),
    ("RETRY_BASE_SECONDS", "-1"),
    ("RETRY_MAX_DELAY_SECONDS", "ten"),
    ("RETRY_MAX_DELAY_SECONDS", "-0.5"),
    ("RETRY_MAX_ATTEMPTS", "0"),
    ("RETRY_MAX_ATTEMPTS", "3.0"),
    ("RETRY_HORIZON_SECONDS", "0.5"),
    ("UNIT_STALE_SECONDS", "0.1"),
    ("SWEEP_INTERVAL_SECONDS", "0"),
    ("TASK_LEASE_SECONDS", "0.5"),
    ("WORKER_CONCURRENCY", "0"),
    ("WORKER_CONCURRENCY", "513"),
    ("WORKER_CONCURRENCY", "many"),
    ("WORKER_POOL", "gevent"),
    ("WORKER_PROCESSES", "0"),
    ("WORKER_PROCESSES", "33"),
    ("WORKER_PROCESSES", "two"),
    ("DELIVERY_POLL_SECONDS", "0"),
    ("DELIVERY_POLL_SECONDS", "soon\nish"),
]


@pytest.mark.parametrize(("variable", "value"), MALFORMED)
def test_malformed_variable_raises_one_line_error_naming_it(variable, value):
    # given an otherwise valid environment with one malformed variable
    env = {**FULL_ENV, variable: value}
    # when
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    # then the error is one line that starts with the variable's name
    message = str(caught.value)
    assert caught.value.variable == variable
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert caught.value.problem


def test_every_variable_has_a_malformed_case():
    # given / when the variables the malformed table covers
    covered = {variable for variable, _ in MALFORMED}
    # then only the free-text credentials (no format to check) are missing
    assert set(FULL_ENV) - covered == {
        "IFEELGOODS_API_KEY",
        "IFEELGOODS_API_SECRET",
        "REWARDOPS_CLIENT_ID",
        "REWARDOPS_CLIENT_SECRET",
    }


def test_rules_file_with_newline_still_gives_one_line_error():
    # given a RULES_FILE value with an embedded newline
    env = {**FULL_ENV, "RULES_FILE": "/no/such\nrules.toml"}
    # when
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    # then
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize(
    "variable", ["PROVIDER_TIMEOUT_SECONDS", "TASK_LEASE_SECONDS", "RETRY_HORIZON_SECONDS"]
)
def test_non_finite_number_settings_are_rejected(variable, value):
    # given a number setting that is not a finite number
    env = {**FULL_ENV, variable: value}
    # when / then
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


@pytest.mark.parametrize(
    ("variable", "value", "secret_part"),
    [
        ("CONIQ_WEBHOOK_SECRETS", f"{SECRET_A} hunter2-leaked", "hunter2"),
        ("EVENT_SECRETS", "whsec_hunter", "hunter"),
        ("ADMIN_TOKEN", "hunter2-short", "hunter2"),
        ("SENTRY_DSN", "ftp://sentrypublickey123@sentry.example/1", "sentrypublickey123"),
        ("REDIS_URL", "http://:p4ssw0rd@cache:6379/0", "p4ssw0rd"),
    ],
)
def test_error_message_does_not_echo_secret_values(variable, value, secret_part):
    # given a malformed secret-bearing value
    env = {**FULL_ENV, variable: value}
    # when
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    # then the message names the variable but not the secret
    assert caught.value.variable == variable
    assert secret_part not in str(caught.value)


def test_empty_environment_gives_documented_defaults():
    # given no variables at all
    # when
    settings = Settings.from_env({})
    # then every value is its default
    assert settings == Settings()
    assert settings.webhook_tolerance_seconds == 300
    assert settings.key_prefix == "rr"
    assert settings.rules_file == DEFAULT_RULES_FILE
    assert settings.rules_file.is_file()
    assert settings.coniq_webhook_secrets == ()
    assert settings.event_secrets == ()
    assert settings.admin_token == ""
    assert settings.log_format == "text"
    assert settings.sentry_environment == "production"
    assert settings.celery_broker_url == ""
    assert settings.worker_concurrency == 64
    assert settings.worker_pool == "threads"
    # two consumer threads (and GILs) per host: one caps fulfilment near 110 units/s
    assert settings.worker_processes == 2


def test_full_environment_is_parsed_into_typed_values():
    # given every variable set
    # when
    settings = Settings.from_env(FULL_ENV)
    # then
    assert settings.redis_url == "redis://cache.internal:6379/0"
    assert settings.celery_broker_url == "amqp://guest@rabbit.internal:5672//"
    assert settings.key_prefix == "rr-prod"
    assert settings.webhook_tolerance_seconds == 120
    assert settings.max_body_bytes == 65536
    # a trailing slash on a provider base URL is dropped
    assert settings.ifeelgoods_base_url == "https://sandbox.ifeelgoods.com/fulfillment/v2"
    assert settings.rules_file == DEFAULT_RULES_FILE
    assert settings.log_format == "json"
    assert settings.sentry_environment == "staging"
    assert settings.provider_timeout_seconds == 7.5
    assert settings.retry_max_attempts == 12
    assert settings.task_lease_seconds == 90.0
    assert settings.worker_concurrency == 32
    assert settings.worker_pool == "prefork"
    assert settings.worker_processes == 3


def test_a_prefork_worker_is_one_process_per_host_unless_set():
    # given the prefork pool (already WORKER_CONCURRENCY processes) and no WORKER_PROCESSES
    # when
    settings = Settings.from_env({"WORKER_POOL": "prefork"})
    # then
    assert settings.worker_processes == 1


def test_broker_url_defaults_to_redis_url():
    # given only REDIS_URL
    env = {"REDIS_URL": "redis://cache.internal:6379/3"}
    # when
    settings = Settings.from_env(env)
    # then Celery uses the same Redis
    assert settings.broker_url == ""
    assert settings.celery_broker_url == "redis://cache.internal:6379/3"


def test_values_are_trimmed_and_log_format_is_case_insensitive():
    # given padded values
    env = {"WEBHOOK_TOLERANCE_SECONDS": " 60 ", "LOG_FORMAT": " JSON ", "ADMIN_TOKEN": " " * 3}
    # when
    settings = Settings.from_env(env)
    # then
    assert settings.webhook_tolerance_seconds == 60
    assert settings.log_format == "json"
    assert settings.admin_token == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        ("   ", ()),
        (SECRET_A, (SECRET_A,)),
        (f"{SECRET_A} {SECRET_B}", (SECRET_A, SECRET_B)),
        (f"  {SECRET_B}\t{SECRET_A}\n{SECRET_C} ", (SECRET_B, SECRET_A, SECRET_C)),
    ],
)
def test_coniq_webhook_secrets_parse_as_ordered_rotation_list(raw, expected):
    # given a whitespace-separated list of secrets
    # when
    settings = Settings.from_env({"CONIQ_WEBHOOK_SECRETS": raw})
    # then every secret is active, in the order given
    assert settings.coniq_webhook_secrets == expected


def test_rotation_error_names_the_position_of_the_bad_secret():
    # given a rotation list whose third secret is malformed
    env = {"CONIQ_WEBHOOK_SECRETS": f"{SECRET_A} {SECRET_B} whsec_bad!"}
    # when
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    # then
    assert "#3" in str(caught.value)


@pytest.mark.parametrize(
    "variable", ["REDIS_URL", "CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN"]
)
def test_require_raises_naming_an_unset_variable(variable):
    # given settings where the variable is unset
    env = {k: v for k, v in FULL_ENV.items() if k != variable}
    settings = Settings.from_env(env)
    # when
    with pytest.raises(SettingsError) as caught:
        settings.require("REDIS_URL", "CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN")
    # then
    assert caught.value.variable == variable
    assert str(caught.value) == f"{variable}: is required but not set"


def test_require_passes_when_every_named_variable_is_set():
    # given
    settings = Settings.from_env(FULL_ENV)
    # when / then no error
    settings.require("REDIS_URL", "CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN")


def test_require_refuses_an_unknown_name():
    # given
    settings = Settings.from_env(FULL_ENV)
    # when / then a typo is a programming error, not a silent pass
    with pytest.raises(KeyError):
        settings.require("REDIS_ULR")


@pytest.mark.parametrize("variable", list(FULL_ENV))
def test_require_accepts_every_environment_variable_name(variable):
    # given fully configured settings
    settings = Settings.from_env(FULL_ENV)
    # when / then each documented variable name can be required
    settings.require(variable)


def test_require_broker_url_is_satisfied_by_redis_url_default():
    # given only REDIS_URL (the broker defaults to it)
    settings = Settings.from_env({"REDIS_URL": "redis://cache.internal:6379/0"})
    # when / then a process that needs a broker may start
    settings.require("CELERY_BROKER_URL")


def test_require_broker_url_fails_when_neither_url_is_set():
    # given no Redis and no broker
    settings = Settings.from_env({})
    # when / then
    with pytest.raises(SettingsError) as caught:
        settings.require("CELERY_BROKER_URL")
    assert caught.value.variable == "CELERY_BROKER_URL"


def test_redacted_hides_every_secret_and_keeps_the_rest():
    # given fully configured settings
    settings = Settings.from_env(FULL_ENV)
    # when
    view = settings.redacted()
    # then secrets are masked, one mask per rotated secret
    assert view["CONIQ_WEBHOOK_SECRETS"] == ["***", "***"]
    assert view["EVENT_SECRETS"] == ["***"]
    for name in ("IFEELGOODS_API_SECRET", "REWARDOPS_CLIENT_SECRET", "ADMIN_TOKEN", "SENTRY_DSN"):
        assert view[name] == "***"
    # and no secret value appears anywhere in the printable view or the repr
    printed = json.dumps(view) + repr(settings)
    for name in SECRET_VARIABLES:
        for secret in FULL_ENV[name].split():
            assert secret not in printed, name
    # and the non-secret settings are shown as they are
    assert view["REDIS_URL"] == FULL_ENV["REDIS_URL"]
    assert view["RULES_FILE"] == str(DEFAULT_RULES_FILE)
    assert view["RETRY_MAX_ATTEMPTS"] == 12


def test_redacted_leaves_unset_secrets_empty():
    # given no secrets
    # when
    view = Settings.from_env({}).redacted()
    # then an unset secret is visibly unset rather than masked
    assert view["ADMIN_TOKEN"] == ""
    assert view["CONIQ_WEBHOOK_SECRETS"] == []


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("REDIS_URL", "rediss://default:s3cr3t-redis-pw@cache.internal:6380/0"),
        ("CELERY_BROKER_URL", "amqp://relay:s3cr3t-amqp-pw@rabbit.internal:5672//"),
    ],
)
def test_redacted_hides_passwords_in_connection_urls(variable, url):
    # given a connection URL with a password
    settings = Settings.from_env({**FULL_ENV, variable: url})
    # when
    printed = json.dumps(settings.redacted()) + repr(settings)
    # then the password is not printed
    assert "s3cr3t" not in printed
