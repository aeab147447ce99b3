"""Per-process worker runtime: stores, rules and provider adapters, built once after fork.

Every Celery entry point (:mod:`tasks.entrypoints`, the pollers in :mod:`tasks.sources`)
gets it through :func:`runtime`. This module imports no task module, so anything may
import it without closing a circle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from celery import Task

from tasks.providers.adapters import IfeelgoodsAdapter, ProviderAdapter, RewardOpsAdapter
from tasks.providers.ifeelgoods import IfeelgoodsClient
from tasks.providers.rewardops import RewardOpsClient
from tasks.retry import RetryPolicy
from tasks.routing import Rules, load_rules
from worker.config import Settings, SettingsError
from worker.redis_connect import redis_client
from worker.stores.crypto import CodeVault
from worker.stores.dead_letters import DeadLetters
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import Ledger

__all__ = [
    "WorkerRuntime",
    "build_runtime",
    "check_source_settings",
    "check_worker_settings",
    "runtime",
]


@dataclass
class WorkerRuntime:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    inbox: Inbox
    ledger: Ledger
    dead_letters: DeadLetters
    rules: Rules
    retry: RetryPolicy
    adapter_factories: dict[str, Callable[[], ProviderAdapter]]
    _adapters: dict[str, ProviderAdapter] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def adapter(self, provider: str) -> ProviderAdapter:
        """The provider adapter, created on first use so each process owns its client."""
        with self._lock:
            if provider not in self._adapters:
                self._adapters[provider] = self.adapter_factories[provider]()
            return self._adapters[provider]


# Store connections beyond one per fulfilment thread (sweep, pollers, drains).
REDIS_SPARE_CONNECTIONS = 4
# Longest a thread waits for a free store connection before it counts as a Redis error.
REDIS_POOL_WAIT_SECONDS = 10.0

_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def runtime(task: Task) -> WorkerRuntime:
    """This process's runtime, built on first use (after the prefork fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            settings: Settings = task.app.conf.rewardrelay_settings
            _runtime = build_runtime(settings)
        return _runtime


def build_runtime(settings: Settings, *, rules: Rules | None = None) -> WorkerRuntime:
    # One connection per pool thread at most (plus the sweep's and the pollers'): a
    # thread waits for a free one rather than opening more.
    client = redis_client(
        settings.redis_url,
        max_connections=settings.worker_concurrency + REDIS_SPARE_CONNECTIONS,
        pool_wait_seconds=REDIS_POOL_WAIT_SECONDS,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    keys = Keys(settings.key_prefix)
    factories: dict[str, Callable[[], ProviderAdapter]] = {
        "ifeelgoods": lambda: IfeelgoodsAdapter(IfeelgoodsClient.from_settings(settings)),
        "rewardops": lambda: RewardOpsAdapter(RewardOpsClient.from_settings(settings)),
    }
    return WorkerRuntime(
        settings=settings,
        redis=client,
        keys=keys,
        inbox=Inbox(client, keys),
        ledger=Ledger(client, keys, CodeVault(settings.code_keys)),
        dead_letters=DeadLetters(client, keys),
        rules=rules if rules is not None else load_rules(settings.rules_file),
        retry=RetryPolicy.from_settings(settings),
        adapter_factories=factories,
    )


_CREDENTIALS = {
    "ifeelgoods": ("IFEELGOODS_API_KEY", "IFEELGOODS_API_SECRET"),
    "rewardops": ("REWARDOPS_CLIENT_ID", "REWARDOPS_CLIENT_SECRET"),
}


def check_worker_settings(settings: Settings) -> Rules:
    """Validate what a worker needs before it takes a task.

    Raises:
        RulesError: the rules file is invalid (message names rule and field).
        SettingsError: a provider the rules route to has no credentials.
    """
    settings.require("CODE_KEYS")  # a fulfilled unit's codes are sealed before storing
    rules = load_rules(settings.rules_file)
    used = {rule.route.provider for rule in rules.rules if rule.route is not None}
    for provider in sorted(used):
        for name in _CREDENTIALS[provider]:
            if not getattr(settings, name.lower()):
                raise SettingsError(name, f"is required: the rules route rewards to {provider}")
    check_source_settings(settings, rules)
    return rules


# Reward sources: (is it configured, the variable naming its reward code).
_SOURCE_CODES = (
    ("ignico_configured", "IGNICO_REWARD_CODE"),
    ("orders_configured", "ORDERS_REWARD_CODE"),
)


def check_source_settings(settings: Settings, rules: Rules) -> None:
    """Each configured reward source emits a reward code some rule routes, signed events.

    Raises:
        SettingsError: a source's reward code is routed by no rule, or no EVENT_SECRETS.
    """
    for flag, name in _SOURCE_CODES:
        if not getattr(settings, flag):
            continue
        code = getattr(settings, name.lower())
        if rules.route("internal", "reward.granted", {"reward_code": code}) is None:
            raise SettingsError(name, f"{code!r} is routed by no rule in {settings.rules_file}")
        if not settings.event_secrets:
            raise SettingsError("EVENT_SECRETS", "is required to sign the reward sources' events")
