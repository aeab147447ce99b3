"""``rewardrelay relay``: the outbox relay and scheduler, a ``Procfile`` process.

Only starts the loop (logging, Sentry, signals); the loop itself is the relay stage's.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from rewardrelay.commands.common import EXIT_OK
from worker.config import Settings

__all__ = ["register", "stop_on_signals"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    relay = sub.add_parser("relay", help="publish outbox entries and due units to the broker")
    relay.set_defaults(handler=cmd_relay)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``, so the loop ends between two passes."""

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
    stop_on_signals(stop)
    run_relay(settings, stop)
    return EXIT_OK
