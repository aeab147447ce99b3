"""Settings: the only reader of ``os.environ``.

Every process (web, worker, beat, relay, command line) builds one frozen ``Settings`` at
start-up. A missing or malformed value raises ``SettingsError`` whose message is one line
naming the variable and the problem, so a misconfigured process stops before it accepts
anything.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from worker.redis_url import SENTINEL_SCHEME, parse_sentinel_url

__all__ = ["Settings", "SettingsError", "DEFAULT_RULES_FILE"]

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.example.toml")
# Environment names whose Settings field is spelt differently.
ENV_ALIASES = {"CELERY_BROKER_URL": "broker_url", "RR_KEY_PREFIX": "key_prefix"}
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@]*):([^@/]+)@")
_QUERY_PASSWORD = re.compile(r"(sentinel_password=)[^&]*")
_WHSEC = re.compile(r"^whsec_[A-Za-z0-9+/=]{8,}$")
_REWARD_CODE = r"^[\x21-\x7e]{1,200}$"  # same bound as an internal event's reward_code
# A Fernet key: 32 bytes in URL-safe base64 (44 characters, one trailing "=").
_FERNET_KEY = re.compile(r"^[A-Za-z0-9_-]{43}=$")


class SettingsError(Exception):
    """A setting is missing or malformed; ``str(error)`` is one line naming it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _redacted(value: str) -> str:
    return "***" if value else ""


@dataclass(frozen=True)
class Settings:
    """Validated configuration shared by the web, worker and command-line processes."""

    redis_url: str = ""
    broker_url: str = ""
    key_prefix: str = "rr"
    task_queue: str = "celery"
    coniq_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    event_secrets: tuple[str, ...] = field(default=(), repr=False)
    webhook_tolerance_seconds: int = 300
    max_body_bytes: int = 256 * 1024
    ifeelgoods_base_url: str = "https://api.ifeelgoods.com/fulfillment/v2"
    ifeelgoods_api_key: str = field(default="", repr=False)
    ifeelgoods_api_secret: str = field(default="", repr=False)
    rewardops_base_url: str = "https://app.rewardops.net/api/v4"
    rewardops_client_id: str = field(default="", repr=False)
    rewardops_client_secret: str = field(default="", repr=False)
    rules_file: Path = DEFAULT_RULES_FILE
    admin_token: str = field(default="", repr=False)
    sentry_dsn: str = field(default="", repr=False)
    sentry_environment: str = "production"
    log_format: str = "text"
    provider_timeout_seconds: float = 10.0
    retry_base_seconds: float = 2.0
    retry_max_delay_seconds: float = 600.0
    retry_max_attempts: int = 30
    retry_horizon_seconds: float = 24 * 3600.0
    unit_stale_seconds: float = 45.0
    sweep_interval_seconds: float = 5.0
    task_lease_seconds: float = 60.0
    # Celery's pool for the worker (threads: many provider calls in flight per process)
    # and its size: threads, or processes under prefork.
    worker_pool: str = "threads"
    worker_concurrency: int = 64
    # Celery worker processes `rewardrelay worker` (and `run`) starts per host: each has
    # one consumer thread and one GIL, which cap a thread-pool process near 150 units/s.
    worker_processes: int = 2
    delivery_poll_seconds: float = 2.0
    # Reward sources (issue 6): pollers emit signed reward.granted events to the receiver.
    receiver_url: str = "http://127.0.0.1:8000"
    source_poll_seconds: float = 60.0
    source_page_size: int = 25
    ignico_base_url: str = ""
    ignico_client_id: str = field(default="", repr=False)
    ignico_client_secret: str = field(default="", repr=False)
    ignico_reward_code: str = "IGNICO-PAYOUT"
    orders_base_url: str = ""
    orders_client_id: str = field(default="", repr=False)
    orders_client_secret: str = field(default="", repr=False)
    orders_redirect_uri: str = "http://127.0.0.1:8765/callback"
    orders_min_total: Decimal = Decimal("50")
    orders_reward_code: str = "ORDER-REWARD"
    coniq_base_url: str = "https://api.coniq.com"
    coniq_api_key: str = field(default="", repr=False)
    coniq_record_offer_id: str = ""
    # Reward codes at rest (issue 19): Fernet keys, the first seals, every one opens.
    code_keys: tuple[str, ...] = field(default=(), repr=False)
    # Edge durability mode: answer 202 only once this many replicas have the write.
    store_wait_replicas: int = 0
    store_wait_timeout_ms: int = 200
    # Provider lanes (issue 18) and per-provider limits (issue 17 item 2).
    lane_breaker_failures: int = 5
    lane_breaker_error_rate: float = 0.5
    lane_breaker_window_seconds: float = 60.0
    lane_breaker_min_calls: int = 20
    lane_probe_seconds: float = 10.0
    lane_funds_probe_seconds: float = 300.0
    lane_recheck_seconds: float = 60.0
    lane_tick_seconds: float = 1.0
    lane_max_wait_seconds: float = 1.0
    ifeelgoods_max_in_flight: int = 100
    ifeelgoods_rate_per_second: float = 200.0
    rewardops_max_in_flight: int = 100
    rewardops_rate_per_second: float = 200.0
    # Data lifecycle (issue 19): how long a finished event's data is kept, how long its
    # dedupe marker outlives it, and the key of the keyed hash that indexes personal data.
    retention_seconds: int = 30 * 86_400
    dedupe_retention_seconds: int = 400 * 86_400
    erasure_key: str = field(default="", repr=False)

    @property
    def ignico_configured(self) -> bool:
        """Ignico payouts are polled only when a workspace and client id are set."""
        return bool(self.ignico_base_url and self.ignico_client_id)

    @property
    def orders_configured(self) -> bool:
        """The orders platform is polled only when its URL and client id are set."""
        return bool(self.orders_base_url and self.orders_client_id)

    @property
    def coniq_outbound_configured(self) -> bool:
        """Fulfilled Coniq rewards are recorded back only when a Coniq API key is set."""
        return bool(self.coniq_api_key)

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; raise ``SettingsError`` on the first bad one."""
        env = os.environ if environ is None else environ
        defaults = cls()
        redis_url = _url(env, "REDIS_URL", "", ("redis", "rediss", "unix", SENTINEL_SCHEME))
        worker_pool = _choice(env, "WORKER_POOL", "threads", ("threads", "prefork"))
        # A prefork worker is already several processes: one of it per host by default.
        processes = defaults.worker_processes if worker_pool == "threads" else 1
        return cls(
            redis_url=redis_url,
            broker_url=_url(
                env,
                "CELERY_BROKER_URL",
                "",
                ("redis", "rediss", "amqp", "pyamqp", "unix", SENTINEL_SCHEME),
            ),
            key_prefix=_text(env, "RR_KEY_PREFIX", defaults.key_prefix, pattern=r"^[\w.:-]{1,40}$"),
            task_queue=_text(env, "TASK_QUEUE", defaults.task_queue, pattern=r"^[\w.:-]{1,60}$"),
            coniq_webhook_secrets=_secrets(env, "CONIQ_WEBHOOK_SECRETS"),
            event_secrets=_secrets(env, "EVENT_SECRETS"),
            webhook_tolerance_seconds=_int(env, "WEBHOOK_TOLERANCE_SECONDS", 300, low=1),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", defaults.max_body_bytes, low=1024),
            ifeelgoods_base_url=_url(
                env, "IFEELGOODS_BASE_URL", defaults.ifeelgoods_base_url, ("http", "https")
            ),
            ifeelgoods_api_key=env.get("IFEELGOODS_API_KEY", "").strip(),
            ifeelgoods_api_secret=env.get("IFEELGOODS_API_SECRET", "").strip(),
            rewardops_base_url=_url(
                env, "REWARDOPS_BASE_URL", defaults.rewardops_base_url, ("http", "https")
            ),
            rewardops_client_id=env.get("REWARDOPS_CLIENT_ID", "").strip(),
            rewardops_client_secret=env.get("REWARDOPS_CLIENT_SECRET", "").strip(),
            rules_file=_path(env, "RULES_FILE", defaults.rules_file),
            admin_token=_admin_token(env),
            sentry_dsn=_url(env, "SENTRY_DSN", "", ("http", "https")),
            # Sentry's own rules for an environment name: no slash or whitespace, <= 64.
            sentry_environment=_text(
                env, "SENTRY_ENVIRONMENT", defaults.sentry_environment, pattern=r"^[^/\s]{1,64}$"
            ),
            log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
            provider_timeout_seconds=_float(env, "PROVIDER_TIMEOUT_SECONDS", 10.0, low=0.05),
            retry_base_seconds=_float(env, "RETRY_BASE_SECONDS", 2.0, low=0.0),
            retry_max_delay_seconds=_float(env, "RETRY_MAX_DELAY_SECONDS", 600.0, low=0.0),
            retry_max_attempts=_int(env, "RETRY_MAX_ATTEMPTS", 30, low=1),
            retry_horizon_seconds=_float(env, "RETRY_HORIZON_SECONDS", 86400.0, low=1.0),
            unit_stale_seconds=_float(env, "UNIT_STALE_SECONDS", 45.0, low=0.5),
            sweep_interval_seconds=_float(env, "SWEEP_INTERVAL_SECONDS", 5.0, low=0.1),
            task_lease_seconds=_float(env, "TASK_LEASE_SECONDS", 60.0, low=1.0),
            worker_pool=worker_pool,
            worker_concurrency=_int_range(env, "WORKER_CONCURRENCY", 64, low=1, high=512),
            worker_processes=_int_range(env, "WORKER_PROCESSES", processes, low=1, high=32),
            delivery_poll_seconds=_float(env, "DELIVERY_POLL_SECONDS", 2.0, low=0.05),
            code_keys=_code_keys(env, "CODE_KEYS"),
            store_wait_replicas=_int(env, "STORE_WAIT_REPLICAS", 0, low=0),
            store_wait_timeout_ms=_int(
                env, "STORE_WAIT_TIMEOUT_MS", defaults.store_wait_timeout_ms, low=1
            ),
            **_source_settings(env, defaults),
            **_lane_settings(env),
            **_lifecycle_settings(env, defaults),
        )

    def require(self, *names: str) -> None:
        """Fail with ``SettingsError`` if any named setting (env variable name) is empty."""
        attrs = {f.name.upper(): f.name for f in fields(self)}
        attrs.update(ENV_ALIASES)
        for name in names:
            attr = attrs.get(name)
            if attr is None:
                raise KeyError(name)
            value = self.celery_broker_url if name == "CELERY_BROKER_URL" else getattr(self, attr)
            if not value:
                raise SettingsError(name, "is required but not set")

    def redacted(self) -> dict[str, object]:
        """A view safe to print: every secret replaced by ``***``."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = (
                    [_redacted(v) for v in value] if isinstance(value, tuple) else _redacted(value)
                )
            if isinstance(value, str) and "://" in value:
                value = _URL_PASSWORD.sub(r"\1:***@", value)
                value = _QUERY_PASSWORD.sub(r"\1***", value)
            out[f.name.upper()] = str(value) if isinstance(value, Path | Decimal) else value
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Settings({shown})"


def _text(env: Mapping[str, str], name: str, default: str, *, pattern: str) -> str:
    value = env.get(name, "").strip() or default
    if not re.match(pattern, value):
        raise SettingsError(name, f"must match {pattern}")
    return value


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, "").strip()
    if not value:
        return default
    if value.startswith(SENTINEL_SCHEME + "://") and SENTINEL_SCHEME in schemes:
        try:
            parse_sentinel_url(value)
        except ValueError as exc:
            raise SettingsError(
                name, f"{exc} ({SENTINEL_SCHEME}://[:PASSWORD@]HOST:PORT[,HOST:PORT]/SERVICE[/DB])"
            ) from None
        return value
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise SettingsError(name, f"must be a URL with scheme {' or '.join(schemes)}")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(name, "must name a host")
    return value.rstrip("/") if parts.scheme in ("http", "https") else value


def _secrets(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    values = tuple(env.get(name, "").split())
    for position, secret in enumerate(values, start=1):
        if not _WHSEC.match(secret):
            raise SettingsError(
                name, f"secret #{position} must look like whsec_<base64>, space-separated"
            )
    return values


def _code_keys(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    values = tuple(env.get(name, "").split())
    for position, key in enumerate(values, start=1):
        if not _FERNET_KEY.match(key):
            raise SettingsError(
                name,
                f"key #{position} must be a Fernet key (32 bytes, URL-safe base64), "
                "space-separated",
            )
    return values


def _int(env: Mapping[str, str], name: str, default: int, *, low: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"must be an integer, got {raw!r}") from None
    if value < low:
        raise SettingsError(name, f"must be at least {low}, got {value}")
    return value


def _int_range(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    value = _int(env, name, default, low=low)
    if value > high:
        raise SettingsError(name, f"must be at most {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, low: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(name, f"must be a finite number, got {raw!r}")
    if value < low:
        raise SettingsError(name, f"must be at least {low}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = env.get(name, "").strip()
    path = Path(raw).expanduser() if raw else default
    if not path.is_file():
        raise SettingsError(name, f"file not found: {str(path)!r}")
    return path


def _admin_token(env: Mapping[str, str]) -> str:
    value = env.get("ADMIN_TOKEN", "").strip()
    if value and len(value) < 16:
        raise SettingsError("ADMIN_TOKEN", "must be at least 16 characters")
    return value


def _source_settings(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """Settings of the reward sources (Ignico, orders platform) and the Coniq loop-back.

    A client id without its secret or base URL is refused: half a configuration would
    silently never poll.
    """
    out: dict[str, Any] = {
        "receiver_url": _url(env, "RECEIVER_URL", defaults.receiver_url, ("http", "https")),
        "source_poll_seconds": _float(env, "SOURCE_POLL_SECONDS", 60.0, low=0.1),
        "source_page_size": _int(env, "SOURCE_PAGE_SIZE", defaults.source_page_size, low=1),
        "ignico_base_url": _url(env, "IGNICO_BASE_URL", "", ("http", "https")),
        "ignico_client_id": env.get("IGNICO_CLIENT_ID", "").strip(),
        "ignico_client_secret": env.get("IGNICO_CLIENT_SECRET", "").strip(),
        "ignico_reward_code": _text(
            env, "IGNICO_REWARD_CODE", defaults.ignico_reward_code, pattern=_REWARD_CODE
        ),
        "orders_base_url": _url(env, "ORDERS_BASE_URL", "", ("http", "https")),
        "orders_client_id": env.get("ORDERS_CLIENT_ID", "").strip(),
        "orders_client_secret": env.get("ORDERS_CLIENT_SECRET", "").strip(),
        "orders_redirect_uri": _url(
            env, "ORDERS_REDIRECT_URI", defaults.orders_redirect_uri, ("http", "https")
        ),
        "orders_min_total": _decimal(env, "ORDERS_MIN_TOTAL", defaults.orders_min_total),
        "orders_reward_code": _text(
            env, "ORDERS_REWARD_CODE", defaults.orders_reward_code, pattern=_REWARD_CODE
        ),
        "coniq_base_url": _url(env, "CONIQ_BASE_URL", defaults.coniq_base_url, ("http", "https")),
        "coniq_api_key": env.get("CONIQ_API_KEY", "").strip(),
        "coniq_record_offer_id": env.get("CONIQ_RECORD_OFFER_ID", "").strip(),
    }
    if out["coniq_api_key"] and not out["coniq_record_offer_id"]:
        raise SettingsError("CONIQ_RECORD_OFFER_ID", "is required when CONIQ_API_KEY is set")
    for prefix in ("IGNICO", "ORDERS"):
        client_id = out[f"{prefix.lower()}_client_id"]
        if client_id and not out[f"{prefix.lower()}_client_secret"]:
            raise SettingsError(
                f"{prefix}_CLIENT_SECRET", f"is required when {prefix}_CLIENT_ID is set"
            )
        if client_id and not out[f"{prefix.lower()}_base_url"]:
            raise SettingsError(f"{prefix}_BASE_URL", f"is required when {prefix}_CLIENT_ID is set")
    return out


def _decimal(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(name, f"must be a decimal amount, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise SettingsError(name, f"must be a finite amount of at least 0, got {raw!r}")
    return value


def _lane_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Provider lanes: circuit breaker, probes, waiting, and each provider's limits.

    Neither vendor documents a rate or concurrency limit (providers.md 1.10, 2.10): the
    limit defaults are ours, and 0 turns a limit off.
    """
    rate = _float(env, "LANE_BREAKER_ERROR_RATE", 0.5, low=0.01)
    if rate > 1:
        raise SettingsError("LANE_BREAKER_ERROR_RATE", f"must be at most 1, got {rate}")
    return {
        "lane_breaker_failures": _int(env, "LANE_BREAKER_FAILURES", 5, low=1),
        "lane_breaker_error_rate": rate,
        "lane_breaker_window_seconds": _float(env, "LANE_BREAKER_WINDOW_SECONDS", 60.0, low=1.0),
        "lane_breaker_min_calls": _int(env, "LANE_BREAKER_MIN_CALLS", 20, low=1),
        "lane_probe_seconds": _float(env, "LANE_PROBE_SECONDS", 10.0, low=0.1),
        "lane_funds_probe_seconds": _float(env, "LANE_FUNDS_PROBE_SECONDS", 300.0, low=0.1),
        "lane_recheck_seconds": _float(env, "LANE_RECHECK_SECONDS", 60.0, low=1.0),
        "lane_tick_seconds": _float(env, "LANE_TICK_SECONDS", 1.0, low=0.1),
        "lane_max_wait_seconds": _float(env, "LANE_MAX_WAIT_SECONDS", 1.0, low=0.0),
        "ifeelgoods_max_in_flight": _int(env, "IFEELGOODS_MAX_IN_FLIGHT", 100, low=0),
        "ifeelgoods_rate_per_second": _float(env, "IFEELGOODS_RATE_PER_SECOND", 200.0, low=0.0),
        "rewardops_max_in_flight": _int(env, "REWARDOPS_MAX_IN_FLIGHT", 100, low=0),
        "rewardops_rate_per_second": _float(env, "REWARDOPS_RATE_PER_SECOND", 200.0, low=0.0),
    }


MIN_ERASURE_KEY_CHARS = 32  # a keyed hash is only as strong as its key


def _lifecycle_settings(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """Retention of finished events, of their dedupe markers, and the erasure index key.

    A marker that expired before the event's data would let a redelivery in as a new
    event (a second reward), so the dedupe retention may not be the shorter one.
    """
    retention = _int(env, "RETENTION_SECONDS", defaults.retention_seconds, low=1)
    dedupe = _int(env, "DEDUPE_RETENTION_SECONDS", defaults.dedupe_retention_seconds, low=1)
    if dedupe < retention:
        raise SettingsError(
            "DEDUPE_RETENTION_SECONDS",
            f"must be at least RETENTION_SECONDS ({retention}), got {dedupe}",
        )
    key = env.get("ERASURE_KEY", "").strip()
    if key and len(key) < MIN_ERASURE_KEY_CHARS:
        raise SettingsError("ERASURE_KEY", f"must be at least {MIN_ERASURE_KEY_CHARS} characters")
    return {"retention_seconds": retention, "dedupe_retention_seconds": dedupe, "erasure_key": key}
