"""``rewardrelay check``: settings, rules, Redis, broker, providers and sources, one
``ok``/``FAIL`` line each; exit 1 when any fails.

Settings are listed under their environment variable names (what an operator sets), with
secrets redacted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import httpx

from rewardrelay.commands.common import EXIT_FAILED, EXIT_OK, safe_url, start_the_stack
from rewardrelay.datadir import DataDir
from worker.config import ENV_ALIASES, Settings, SettingsError

__all__ = ["register", "setting_lines"]

# Timeout of each connectivity probe of ``check``.
PROBE_TIMEOUT_SECONDS = 3.0
# Settings field (upper case) → the environment variable that sets it, where they differ.
_VARIABLE_OF_FIELD = {field.upper(): variable for variable, field in ENV_ALIASES.items()}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check", help="settings, rules, Redis, broker, providers")
    check.set_defaults(handler=cmd_check)


def setting_lines(settings: Settings) -> list[str]:
    """``VARIABLE=value`` per setting, secrets redacted, sorted by variable name."""
    redacted = settings.redacted()
    named = {_VARIABLE_OF_FIELD.get(name, name): value for name, value in redacted.items()}
    return [f"{name}={named[name]}" for name in sorted(named)]


def cmd_check(_args: argparse.Namespace) -> int:
    data_dir = DataDir.from_env()
    env = data_dir.client_environ()
    results: list[bool] = []

    def report(item: str, problem: str | None) -> None:
        results.append(problem is None)
        print(f"ok   {item}" if problem is None else f"FAIL {item}: {problem}")

    try:
        settings = Settings.from_env(env)
        settings.require("REDIS_URL", "CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN")
    except SettingsError as exc:
        report("settings", f"invalid setting {exc}")
        if exc.variable == "REDIS_URL" and not env.get("REDIS_URL", "").strip():
            # Still unset after client_environ: no stack runs on this data directory.
            print(
                f"       no local stack is running ({data_dir.path}) — "
                + start_the_stack("set REDIS_URL")
            )
        return EXIT_FAILED
    report("settings", None)
    for line in setting_lines(settings):
        print(f"       {line}")
    for item, probe in _checks(settings):
        report(item, probe())
    return EXIT_OK if all(results) else EXIT_FAILED


def _checks(settings: Settings) -> list[tuple[str, Callable[[], str | None]]]:
    return [
        (f"rules {settings.rules_file}", lambda: _probe_rules(settings)),
        (f"redis {safe_url(settings.redis_url)}", lambda: _probe_redis(settings)),
        (f"broker {safe_url(settings.celery_broker_url)}", lambda: _probe_broker(settings)),
        (f"ifeelgoods {settings.ifeelgoods_base_url}", lambda: _probe_ifeelgoods(settings)),
        (f"rewardops {settings.rewardops_base_url}", lambda: _probe_rewardops(settings)),
        *_source_checks(settings),
    ]


def _source_checks(settings: Settings) -> list[tuple[str, Callable[[], str | None]]]:
    """One item per configured reward source and the Coniq loop-back (none when unset)."""
    checks: list[tuple[str, Callable[[], str | None]]] = []
    if settings.ignico_configured:
        checks.append(
            (f"ignico {settings.ignico_base_url}", lambda: _probe_source(settings, "ignico"))
        )
    if settings.orders_configured:
        checks.append(
            (
                f"orders-platform {settings.orders_base_url}",
                lambda: _probe_source(settings, "orders-platform"),
            )
        )
    if settings.coniq_outbound_configured:
        checks.append(
            (f"coniq {settings.coniq_base_url}", lambda: _probe_source(settings, "coniq"))
        )
    return checks


def _probe_source(settings: Settings, name: str) -> str | None:
    """Obtain a token (Ignico), refresh one (orders platform) or call once (Coniq)."""
    import redis

    from tasks.http.base import ProviderClient
    from tasks.http.errors import ProviderError
    from tasks.sources.clients.coniq import ConiqClient
    from tasks.sources.clients.ignico import IgnicoClient
    from tasks.sources.clients.orders_platform import OrdersPlatformClient
    from tasks.sources.common import SourceKeys
    from tasks.sources.orders_platform import token_store
    from worker.redis_connect import redis_client
    from worker.stores.keys import Keys

    store = redis_client(settings.redis_url, socket_timeout=PROBE_TIMEOUT_SECONDS)
    client: ProviderClient
    if name == "ignico":
        client = IgnicoClient.from_settings(settings, timeout=PROBE_TIMEOUT_SECONDS)
    elif name == "orders-platform":
        client = OrdersPlatformClient.from_settings(
            settings,
            token_store(store, SourceKeys(Keys(settings.key_prefix), name)),
            timeout=PROBE_TIMEOUT_SECONDS,
        )
    else:
        client = ConiqClient.from_settings(settings, timeout=PROBE_TIMEOUT_SECONDS)
    try:
        client.check()
    except ProviderError as exc:
        if exc.reason == "not_connected":
            return "not connected: run `rewardrelay connect orders-platform` once"
        status = f" (HTTP {exc.status_code})" if exc.status_code else ""
        return f"{exc.reason}{status}"
    except redis.RedisError as exc:
        return f"cannot read the stored token: {type(exc).__name__}"
    finally:
        client.close()
        store.close()
    return None


def _probe_rules(settings: Settings) -> str | None:
    from tasks.routing import RulesError, load_rules
    from tasks.runtime import check_source_settings

    try:
        rules = load_rules(settings.rules_file)
        check_source_settings(settings, rules)
    except (RulesError, SettingsError) as exc:
        return str(exc)
    return None if rules.rules else "the file holds no [[rule]]"


def _probe_redis(settings: Settings) -> str | None:
    import redis

    from worker.redis_connect import redis_client

    client = redis_client(
        settings.redis_url,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    except redis.ConnectionError:
        return "cannot connect — " + start_the_stack("set REDIS_URL")
    except redis.RedisError as exc:
        return f"PING failed: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def _probe_broker(settings: Settings) -> str | None:
    from worker.celery_app import make_celery

    app = make_celery(settings)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT_SECONDS
            )
    # Kombu raises transport-specific errors; each one means the broker is not usable.
    except Exception as exc:  # noqa: BLE001
        return f"cannot connect: {type(exc).__name__}: {exc}"
    finally:
        app.close()
    return None


def _probe_http(request: Callable[[], httpx.Response], what: str) -> str | None:
    try:
        response = request()
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"
    if response.status_code in (401, 403):
        return f"{what} rejected (HTTP {response.status_code})"
    if not response.is_success:
        # A 404 here usually means a base URL that is not the provider's API.
        return f"HTTP {response.status_code} from {response.request.url}"
    return None


def _probe_ifeelgoods(settings: Settings) -> str | None:
    if not (settings.ifeelgoods_api_key and settings.ifeelgoods_api_secret):
        return "IFEELGOODS_API_KEY and IFEELGOODS_API_SECRET are required"
    headers = {
        "Api-Key": settings.ifeelgoods_api_key,
        "Api-Secret": settings.ifeelgoods_api_secret,
        "Accept": "application/json",
    }
    return _probe_http(
        lambda: httpx.get(
            f"{settings.ifeelgoods_base_url}/accounts/me",
            headers=headers,
            timeout=PROBE_TIMEOUT_SECONDS,
        ),
        "credentials",
    )


def _probe_rewardops(settings: Settings) -> str | None:
    if not (settings.rewardops_client_id and settings.rewardops_client_secret):
        return "REWARDOPS_CLIENT_ID and REWARDOPS_CLIENT_SECRET are required"
    return _probe_http(
        lambda: httpx.post(
            f"{settings.rewardops_base_url}/auth/token",
            auth=(settings.rewardops_client_id, settings.rewardops_client_secret),
            json={"grant_type": "client_credentials"},
            timeout=PROBE_TIMEOUT_SECONDS,
        ),
        "client credentials",
    )
