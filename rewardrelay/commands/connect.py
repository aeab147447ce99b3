"""``rewardrelay connect orders-platform``: the one-time authorization-code flow."""

from __future__ import annotations

import argparse

from rewardrelay.commands.common import EXIT_OK, CommandError, redis_unreachable, seconds
from rewardrelay.datadir import DataDir
from worker.config import Settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connect = sub.add_parser("connect", help="authorize access to a reward source once")
    connect.add_argument("source", choices=("orders-platform",))
    connect.add_argument(
        "--timeout",
        type=seconds(zero=False),
        default=300.0,
        metavar="SECONDS",
        help="wait for the redirect",
    )
    connect.set_defaults(handler=cmd_connect)


def cmd_connect(args: argparse.Namespace) -> int:
    from rewardrelay.connect import ConnectError, connect_orders_platform

    settings = Settings.from_env(DataDir.from_env().client_environ())
    settings.require("REDIS_URL")
    _require_redis(settings.redis_url)

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


def _require_redis(url: str) -> None:
    """Fail before the consent flow, not after it, when the token could not be stored.

    Raises:
        CommandError: Redis does not answer a PING.
    """
    import redis

    from worker.redis_connect import redis_client

    client = redis_client(url, socket_timeout=3.0, socket_connect_timeout=3.0)
    try:
        client.ping()
    except redis.RedisError:
        raise CommandError(redis_unreachable(url)) from None
    finally:
        client.close()
