"""What every request handler of the edge shares: built once by ``create_app``.

The context lives at ``app.extensions["rewardrelay"]``; views reach it through
``edge_context()`` rather than module globals, so several apps (tests, bench) can live in
one process with different settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask import current_app

from tasks.routing import Rules
from webhooks.broker_probe import BrokerProbe
from worker.config import Settings
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys

__all__ = ["EXTENSION_KEY", "EdgeContext", "edge_context"]

EXTENSION_KEY = "rewardrelay"


@dataclass(frozen=True)
class EdgeContext:
    """The edge's dependencies.

    ``celery`` is used only by the readiness probe (through ``broker_probe``, a
    ``webhooks.broker_probe.BrokerProbe``): the edge never publishes tasks (the relay publishes
    what ``Inbox.accept`` appended to the outbox stream).
    """

    settings: Settings
    redis: redis.Redis
    keys: Keys
    inbox: Inbox
    rules: Rules
    celery: Any  # celery.Celery (untyped library)
    broker_probe: BrokerProbe


def edge_context() -> EdgeContext:
    """The current app's ``EdgeContext`` (call inside a request or app context)."""
    ctx = current_app.extensions[EXTENSION_KEY]
    if not isinstance(ctx, EdgeContext):
        raise RuntimeError("the app was not built by webhooks.create_app")
    return ctx
