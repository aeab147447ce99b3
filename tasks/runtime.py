"""Per-process worker runtime: stores, rules and provider clients, built once after fork."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from tasks.fulfillers import Fulfiller, IfeelgoodsFulfiller, RewardOpsFulfiller
from tasks.providers.ifeelgoods import IfeelgoodsClient
from tasks.retry import RetryPolicy
from tasks.routing import Rules, load_rules
from worker.config import Settings, SettingsError
from worker.stores.dead_letters import DeadLetters
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import Ledger

__all__ = ["WorkerRuntime", "build_runtime", "check_source_settings", "check_worker_settings"]


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
    fulfiller_factories: dict[str, Callable[[], Fulfiller]]
    _fulfillers: dict[str, Fulfiller] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fulfiller(self, provider: str) -> Fulfiller:
        """The provider adapter, created on first use so each process owns its client."""
        with self._lock:
            if provider not in self._fulfillers:
                self._fulfillers[provider] = self.fulfiller_factories[provider]()
            return self._fulfillers[provider]


def build_runtime(settings: Settings, *, rules: Rules | None = None) -> WorkerRuntime:
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )
    keys = Keys(settings.key_prefix)
    timeout = settings.provider_timeout_seconds
    factories: dict[str, Callable[[], Fulfiller]] = {
        "ifeelgoods": functools.partial(
            lambda: IfeelgoodsFulfiller(
                IfeelgoodsClient(
                    settings.ifeelgoods_base_url,
                    settings.ifeelgoods_api_key,
                    settings.ifeelgoods_api_secret,
                    timeout=timeout,
                )
            )
        ),
        "rewardops": functools.partial(_rewardops, settings),
    }
    return WorkerRuntime(
        settings=settings,
        redis=client,
        keys=keys,
        inbox=Inbox(client, keys),
        ledger=Ledger(client, keys),
        dead_letters=DeadLetters(client, keys),
        rules=rules if rules is not None else load_rules(settings.rules_file),
        retry=RetryPolicy.from_settings(settings),
        fulfiller_factories=factories,
    )


def _rewardops(settings: Settings) -> Fulfiller:
    from tasks.providers.rewardops import RewardOpsClient

    return RewardOpsFulfiller(
        RewardOpsClient(
            settings.rewardops_base_url,
            settings.rewardops_client_id,
            settings.rewardops_client_secret,
            timeout=settings.provider_timeout_seconds,
        )
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
