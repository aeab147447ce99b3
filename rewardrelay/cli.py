"""The ``rewardrelay`` command line.

    rewardrelay run        the whole stack on embedded defaults (Redis, sandboxes, web,
                           worker, beat, relay, Flower)
    rewardrelay relay      the outbox relay and scheduler (a Procfile process)
    rewardrelay sandbox    run a provider sandbox in the foreground
    rewardrelay send       sign and post an event (a sample reward by default)
    rewardrelay status     the fulfilment state of an event's units
    rewardrelay dlq        list, show, replay and discard dead letters
    rewardrelay check      settings, rules, Redis, broker and provider reachability
    rewardrelay connect    authorize access to a reward source once (orders-platform)

The client commands (``send``, ``status``, ``dlq``, ``check``) talk to the HTTP API and
need no configuration next to a local ``rewardrelay run``: unset secrets and the admin
token come from the local data directory (``RR_DATA_DIR``, default ``./.rewardrelay``).

Exit codes: 0 success; 1 failure (an HTTP error, a failed check, a dead-lettered or
unroutable unit for ``status``); 2 invalid settings or usage; 3 ``status`` still in
progress; 4 ``status`` could not be read (unknown event, refused token, unreachable).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from rewardrelay.datadir import DataDir
from worker.config import Settings, SettingsError

__all__ = ["main", "new_event_id", "sample_event", "status_exit_code"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_IN_PROGRESS = 3
EXIT_UNAVAILABLE = 4
DEFAULT_PORT = 8000
# Timeout of one HTTP call to the receiver's API.
HTTP_TIMEOUT_SECONDS = 10.0
# Interval between polls of ``status --wait``.
STATUS_POLL_SECONDS = 0.5
INGEST_PATHS = {"coniq": "/webhooks/coniq", "internal": "/events"}
SECRET_VARIABLES = {"coniq": "CONIQ_WEBHOOK_SECRETS", "internal": "EVENT_SECRETS"}
DONE_STATES = frozenset({"fulfilled", "ignored"})
FAILED_STATES = frozenset({"dead_lettered", "unroutable"})
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


class CommandError(Exception):
    """A command failed in an expected way; ``str()`` is printed, ``code`` is the exit."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --- helpers --------------------------------------------------------------------------


def new_event_id() -> str:
    """``evt_`` + a ULID (48-bit milliseconds + 80 random bits, Crockford base32)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(secrets.token_bytes(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_event(source: str, event_id: str | None = None) -> dict[str, Any]:
    """A valid sample event: a Coniq ``reward.issued`` for offer 1001 (Ifeelgoods in the
    example rules) or an internal ``reward.granted`` of ``GIFT10``."""
    event_id = event_id or new_event_id()
    suffix = event_id[-8:].lower()
    if source == "coniq":
        data: dict[str, Any] = {
            "customer": {
                "id": f"cus_{suffix}",
                "email": f"ada+{suffix}@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
            },
            "subscription": {"id": f"sub_{suffix}", "program_id": "prog_demo"},
            "reward": {
                "id": f"rwd_{suffix}",
                "offer_id": "1001",
                "name": "$10 gift card",
                "expiry_date": (date.today() + timedelta(days=90)).isoformat(),
            },
        }
        event_type = "reward.issued"
    else:
        data = {
            "recipient": {
                "email": f"grace+{suffix}@example.com",
                "first_name": "Grace",
                "last_name": "Hopper",
            },
            "rewards": [{"reward_code": "GIFT10", "quantity": 1}],
            "reference": f"rr-send-{suffix}",
        }
        event_type = "reward.granted"
    return {
        "id": event_id,
        "type": event_type,
        "created_at": _now_iso(),
        "account_id": "demo-mall",
        "data": data,
    }


def status_exit_code(units: Sequence[Mapping[str, Any]]) -> int:
    """0 when every unit is done, 1 when any failed, 3 while any is still in progress."""
    states = {str(unit.get("state", "")) for unit in units}
    if states & FAILED_STATES:
        return EXIT_FAILED
    if states <= DONE_STATES:
        return EXIT_OK
    return EXIT_IN_PROGRESS


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise SettingsError(name, f"must be a port number from 1 to 65535, got {raw!r}")
    return int(raw)


def _client_context(args: argparse.Namespace) -> tuple[Settings, dict[str, str], str]:
    """Settings, environment and API base URL for a client command.

    Raises:
        SettingsError: a setting (or ``PORT``) is malformed.
    """
    env = DataDir.from_env().client_environ()
    settings = Settings.from_env(env)
    url = getattr(args, "url", None)
    if not url:
        url = f"http://127.0.0.1:{_port(env, 'PORT', DEFAULT_PORT)}"
    return settings, env, url.rstrip("/")


def _admin_headers(settings: Settings) -> dict[str, str]:
    settings.require("ADMIN_TOKEN")
    return {"Authorization": f"Bearer {settings.admin_token}", "Accept": "application/json"}


def _describe_error(response: httpx.Response) -> str:
    """One line for a non-2xx answer: the problem's type and detail when there is one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "title" in body):
        kind = str(body.get("type", "")).rsplit("/", 1)[-1]
        detail = body.get("detail") or body.get("title")
        errors = body.get("errors")
        extra = f" {json.dumps(errors, sort_keys=True)}" if errors else ""
        return f"HTTP {response.status_code} {kind}: {detail}{extra}".replace(" :", ":")
    text = response.text.strip().splitlines()
    return f"HTTP {response.status_code}: {text[0][:200] if text else response.reason_phrase}"


def _request(method: str, url: str, *, headers: Mapping[str, str], **kwargs: Any) -> httpx.Response:
    try:
        return httpx.request(
            method, url, headers=dict(headers), timeout=HTTP_TIMEOUT_SECONDS, **kwargs
        )
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None


def _when(value: Any) -> str:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value not in (None, "") else "-"


def _parse_since(raw: str | None) -> str | None:
    """Unix seconds, an ISO 8601 time, or a duration ago (``30m``, ``2h``, ``1d``)."""
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        return str(float(raw))
    except ValueError:
        pass
    match = _DURATION.match(raw)
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return str(round(time.time() - seconds, 3))
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--since {raw!r}: give Unix seconds, an ISO 8601 time or a duration like 2h",
            EXIT_USAGE,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(moment.timestamp())


# --- send -----------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    from worker.signing import signed_headers

    settings, _env, base = _client_context(args)
    source: str = args.source
    variable = SECRET_VARIABLES[source]
    settings.require(variable)
    secret = (settings.coniq_webhook_secrets if source == "coniq" else settings.event_secrets)[0]
    if args.file:
        event = _load_event_file(Path(args.file))
    else:
        event = sample_event(source)
    event_id = str(event["id"])
    raw = json.dumps(event, separators=(",", ":")).encode()
    path = INGEST_PATHS[source]
    url = base if base.endswith(path) else base + path
    headers = signed_headers(raw, secret, event_id)
    try:
        response = _request("POST", url, headers=headers, content=raw)
    except CommandError as exc:
        print(f"rewardrelay: {exc}", file=sys.stderr)
        print(event_id)
        return EXIT_FAILED
    print(f"HTTP {response.status_code}")
    body = response.text.strip()
    if body:
        print(body)
    print(event_id)
    return EXIT_OK if response.is_success else EXIT_FAILED


def _load_event_file(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CommandError(f"{path} is not JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(document, dict):
        raise CommandError(f"{path} must hold a JSON object (an event envelope)", EXIT_USAGE)
    if "id" not in document:
        document = {"id": new_event_id(), **document}
    if not isinstance(document["id"], str) or not document["id"]:
        raise CommandError(f"{path}: the event id must be a non-empty string", EXIT_USAGE)
    return document


# --- status ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    settings, _env, base = _client_context(args)
    headers = _admin_headers(settings)
    url = f"{base}/fulfillments/{args.event_id}"
    deadline = time.monotonic() + max(0.0, args.wait or 0.0)
    while True:
        try:
            response = _request("GET", url, headers=headers)
        except CommandError as exc:
            if time.monotonic() < deadline:
                time.sleep(STATUS_POLL_SECONDS)
                continue
            raise CommandError(str(exc), EXIT_UNAVAILABLE) from None
        if not response.is_success:
            raise CommandError(_describe_error(response), EXIT_UNAVAILABLE)
        body = response.json()
        units = list(body.get("units", []))
        code = status_exit_code(units)
        if code != EXIT_IN_PROGRESS or time.monotonic() >= deadline:
            break
        time.sleep(STATUS_POLL_SECONDS)
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        _print_status(body, units)
    return code


def _print_status(body: Mapping[str, Any], units: Sequence[Mapping[str, Any]]) -> None:
    print(
        f"{body.get('event_id')}  {body.get('source')} {body.get('type')}  "
        f"received {_when(body.get('received_at'))}  state {body.get('state')}"
    )
    for unit in units:
        parts = [
            f"  {unit.get('id')}",
            f"{unit.get('state')}",
            f"provider={unit.get('provider') or '-'}",
            f"attempts={unit.get('attempts', 0)}",
        ]
        if unit.get("provider_ref"):
            parts.append(f"ref={unit['provider_ref']}")
        if unit.get("codes"):
            parts.append("codes=" + ",".join(map(str, unit["codes"])))
        if unit.get("next_attempt_at") and unit.get("state") not in DONE_STATES | FAILED_STATES:
            parts.append(f"next={_when(unit['next_attempt_at'])}")
        if unit.get("dead_letter_id"):
            parts.append(f"dead_letter={unit['dead_letter_id']}")
        error = unit.get("last_error")
        if error and unit.get("state") not in DONE_STATES:
            if isinstance(error, dict):
                error = error.get("detail") or error.get("reason") or json.dumps(error)
            parts.append(f"last_error={error}")
        print("  ".join(parts))


# --- dlq ------------------------------------------------------------------------------


def _dlq_filters(args: argparse.Namespace) -> dict[str, str]:
    filters = {
        "source": args.source,
        "provider": args.provider,
        "reason": args.reason,
        "since": _parse_since(args.since),
    }
    return {name: value for name, value in filters.items() if value}


def cmd_dlq(args: argparse.Namespace) -> int:
    settings, _env, base = _client_context(args)
    headers = _admin_headers(settings)
    action: str = args.dlq_command
    if action == "list":
        params = _dlq_filters(args)
        if args.limit:
            params["limit"] = str(args.limit)
        response = _request("GET", f"{base}/dead-letters", headers=headers, params=params)
        body = _ok_json(response)
        if args.json:
            print(json.dumps(body, indent=2, sort_keys=True))
        else:
            _print_letters(list(body.get("items", [])))
        return EXIT_OK
    if action == "show":
        response = _request("GET", f"{base}/dead-letters/{args.id}", headers=headers)
        body = _ok_json(response)
        if args.json:
            print(json.dumps(body, indent=2, sort_keys=True))
        else:
            _print_letter(body)
        return EXIT_OK
    if action == "replay":
        return _dlq_replay(args, base, headers)
    # discard
    payload = {"reason": args.reason} if args.reason else None
    response = _request("DELETE", f"{base}/dead-letters/{args.id}", headers=headers, json=payload)
    body = _ok_json(response)
    print(f"{body.get('id', args.id)}  {body.get('status', 'discarded')}")
    return EXIT_OK


def _dlq_replay(args: argparse.Namespace, base: str, headers: Mapping[str, str]) -> int:
    if args.id and args.all:
        raise CommandError("give a dead-letter id or --all, not both", EXIT_USAGE)
    if args.id:
        if args.dry_run:
            raise CommandError("--dry-run applies to --all", EXIT_USAGE)
        response = _request("POST", f"{base}/dead-letters/{args.id}/replay", headers=headers)
        body = _ok_json(response)
        print(f"{body.get('id', args.id)}  {body.get('result', 'replayed')}")
        return EXIT_OK
    if not args.all:
        raise CommandError("give a dead-letter id, or --all with optional filters", EXIT_USAGE)
    payload: dict[str, Any] = {**_dlq_filters(args), "dry_run": bool(args.dry_run)}
    if args.limit:
        payload["limit"] = args.limit
    response = _request("POST", f"{base}/dead-letters/replay", headers=headers, json=payload)
    body = _ok_json(response)
    replayed = list(body.get("replayed", []))
    verb = "would replay" if body.get("dry_run") else "replayed"
    print(f"matched {body.get('matched', 0)}, {verb} {len(replayed)}")
    for letter_id in replayed:
        print(f"  {letter_id}")
    return EXIT_OK


def _ok_json(response: httpx.Response) -> dict[str, Any]:
    if not response.is_success:
        raise CommandError(_describe_error(response))
    try:
        body = response.json()
    except ValueError:
        raise CommandError(f"HTTP {response.status_code}: the answer is not JSON") from None
    return body if isinstance(body, dict) else {"value": body}


def _print_letters(items: Sequence[Mapping[str, Any]]) -> None:
    if not items:
        print("no dead letters waiting")
        return
    for item in items:
        status = item.get("status_code")
        print(
            "  ".join(
                [
                    str(item.get("id")),
                    _when(item.get("created_at")),
                    f"{item.get('source')}/{item.get('provider') or '-'}",
                    str(item.get("reason")),
                    f"http={status}" if status else "http=-",
                    f"attempts={item.get('attempts', 0)}",
                    str(item.get("detail") or "")[:120],
                ]
            )
        )
    print(f"{len(items)} dead letter(s)")


def _print_letter(letter: Mapping[str, Any]) -> None:
    history = letter.get("attempts")
    for name, value in letter.items():
        if name == "attempts" and isinstance(value, list):
            continue
        shown = _when(value) if name in ("created_at",) else value
        print(f"{name:12} {shown if shown not in (None, '') else '-'}")
    if isinstance(history, list):
        print(f"attempts     {len(history)}")
        for attempt in history:
            print(f"  {json.dumps(attempt, sort_keys=True)}")


# --- check ----------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    env = DataDir.from_env().client_environ()
    results: list[bool] = []

    def report(item: str, problem: str | None) -> None:
        results.append(problem is None)
        print(f"ok   {item}" if problem is None else f"FAIL {item}: {problem}")

    try:
        settings = Settings.from_env(env)
        settings.require("REDIS_URL", "CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN")
    except SettingsError as exc:
        report("settings", f"invalid setting {exc}")
        return EXIT_FAILED
    report("settings", None)
    for name, value in settings.redacted().items():
        print(f"       {name}={value}")
    for item, probe in _checks(settings):
        report(item, probe())
    return EXIT_OK if all(results) else EXIT_FAILED


def _checks(settings: Settings) -> list[tuple[str, Callable[[], str | None]]]:
    return [
        (f"rules {settings.rules_file}", lambda: _probe_rules(settings)),
        (f"redis {_safe_url(settings.redis_url)}", lambda: _probe_redis(settings)),
        (f"broker {_safe_url(settings.celery_broker_url)}", lambda: _probe_broker(settings)),
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
    from worker.stores.keys import Keys

    store = redis.Redis.from_url(settings.redis_url, socket_timeout=PROBE_TIMEOUT_SECONDS)
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


# Timeout of each connectivity probe of ``check``.
PROBE_TIMEOUT_SECONDS = 3.0


def _safe_url(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


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

    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
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


# --- processes ------------------------------------------------------------------------


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_relay(_args: argparse.Namespace) -> int:
    from tasks.relay import run_relay
    from worker.observability import configure_logging, init_sentry

    settings = Settings.from_env()
    settings.require("REDIS_URL")
    configure_logging(settings)
    init_sentry(settings, component="relay")
    stop = threading.Event()
    _stop_on_signals(stop)
    run_relay(settings, stop)
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    import logging

    from sandboxes.server import serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # SIGTERM ends the server like Ctrl-C does (a clean close of the socket).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve_forever(args.name, host=args.host, port=args.port)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from rewardrelay.stack import run_stack

    return run_stack(port=args.port, flower=not args.no_flower, flower_port=args.flower_port)


def cmd_connect(args: argparse.Namespace) -> int:
    from rewardrelay.connect import ConnectError, connect_orders_platform

    settings = Settings.from_env(DataDir.from_env().client_environ())
    settings.require("REDIS_URL")

    def show(url: str) -> None:
        print("Open this URL, sign in and approve access:", flush=True)
        print(f"  {url}", flush=True)
        print(f"Waiting for the redirect to {settings.orders_redirect_uri} ...", flush=True)

    try:
        connect_orders_platform(settings, on_url=show, timeout=args.timeout)
    except ConnectError as exc:
        raise CommandError(f"connect {args.source}: {exc}") from None
    print(f"connected {args.source}: refresh token stored in Redis")
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewardrelay",
        description="Loyalty events in, rewards out, exactly once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the whole stack on embedded defaults")
    run.add_argument("--port", type=int, default=None, help="receiver port (default $PORT or 8000)")
    run.add_argument("--no-flower", action="store_true", help="do not start Flower")
    run.add_argument(
        "--flower-port", type=int, default=None, help="Flower port (default $FLOWER_PORT or 5555)"
    )
    run.set_defaults(handler=cmd_run)

    relay = sub.add_parser("relay", help="publish outbox entries and due units to the broker")
    relay.set_defaults(handler=cmd_relay)

    sandbox = sub.add_parser("sandbox", help="run a provider sandbox in the foreground")
    # Not a fixed choice: sandboxes.server knows which sandboxes exist (and says so).
    sandbox.add_argument("name", help="ifeelgoods, rewardops, ... (see sandboxes.server)")
    sandbox.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.set_defaults(handler=cmd_sandbox)

    send = sub.add_parser("send", help="sign and post an event (a sample reward by default)")
    send.add_argument("--source", choices=("coniq", "internal"), default="coniq")
    send.add_argument("--url", help="receiver base URL (default http://127.0.0.1:$PORT)")
    send.add_argument("--file", help="event envelope JSON to send instead of the sample")
    send.set_defaults(handler=cmd_send)

    status = sub.add_parser("status", help="fulfilment state of an event's units")
    status.add_argument("event_id")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="poll until terminal"
    )
    status.add_argument("--url", help="receiver base URL (default http://127.0.0.1:$PORT)")
    status.set_defaults(handler=cmd_status)

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, discard")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="receiver base URL (default http://127.0.0.1:$PORT)")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", choices=("coniq", "internal"))
        p.add_argument("--provider", help="e.g. ifeelgoods, rewardops")
        p.add_argument("--reason", help="failure reason, e.g. rejected, exhausted")
        p.add_argument("--since", help="Unix seconds, ISO 8601 time, or a duration (2h, 1d)")
        p.add_argument("--limit", type=int, default=None)

    dlq_list = dlq_sub.add_parser("list", help="dead letters waiting for an operator")
    filters(dlq_list)
    dlq_list.add_argument("--json", action="store_true")
    common(dlq_list)
    dlq_show = dlq_sub.add_parser("show", help="one dead letter with its attempt history")
    dlq_show.add_argument("id")
    dlq_show.add_argument("--json", action="store_true")
    common(dlq_show)
    dlq_replay = dlq_sub.add_parser("replay", help="replay one, or --all matching the filters")
    dlq_replay.add_argument("id", nargs="?")
    dlq_replay.add_argument("--all", action="store_true")
    dlq_replay.add_argument("--dry-run", action="store_true")
    filters(dlq_replay)
    common(dlq_replay)
    dlq_discard = dlq_sub.add_parser("discard", help="discard one dead letter (recorded)")
    dlq_discard.add_argument("id")
    dlq_discard.add_argument("--reason", default="")
    common(dlq_discard)
    dlq.set_defaults(handler=cmd_dlq)

    check = sub.add_parser("check", help="settings, rules, Redis, broker, providers")
    check.set_defaults(handler=cmd_check)

    connect = sub.add_parser("connect", help="authorize access to a reward source once")
    connect.add_argument("source", choices=("orders-platform",))
    connect.add_argument(
        "--timeout", type=float, default=300.0, metavar="SECONDS", help="wait for the redirect"
    )
    connect.set_defaults(handler=cmd_connect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"rewardrelay: invalid setting {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"rewardrelay: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
