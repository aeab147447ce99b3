"""``rewardrelay rotate-keys``: re-seal every stored reward code under the first key.

Rotation in three steps: put a new key first in ``CODE_KEYS`` (keep the old ones after it)
and restart the processes, so new codes are sealed with it and old ones still open; run
this command, which re-seals what is stored; then drop the old key. Safe to run again and
while workers run; codes an older release stored in clear are sealed too. Exit 0 when
every stored code is under the first key; 1 when some could be opened by no key (they
are listed, by unit id, and left as they are).
"""

from __future__ import annotations

import argparse
import sys

from rewardrelay.commands.common import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE
from rewardrelay.datadir import DataDir
from worker.config import Settings

__all__ = ["register", "cmd_rotate_keys"]

SHOWN_UNREADABLE = 20  # unit ids listed when some codes open with no key


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rotate = sub.add_parser("rotate-keys", help="re-seal stored reward codes under the first key")
    rotate.set_defaults(handler=cmd_rotate_keys)


def cmd_rotate_keys(_args: argparse.Namespace) -> int:
    """Re-seal, then print one line of counts (and the unit ids no key opens)."""
    import redis

    from worker.redis_connect import redis_client
    from worker.stores.crypto import CodeVault
    from worker.stores.keys import Keys
    from worker.stores.ledger import Ledger

    directory = DataDir.from_env()
    env = directory.client_environ()
    if not env.get("CODE_KEYS", "").strip() and directory.settings_file.exists():
        env["CODE_KEYS"] = directory.secrets()["CODE_KEYS"]  # the keys `run` generated
    settings = Settings.from_env(env)
    settings.require("REDIS_URL", "CODE_KEYS")
    client = redis_client(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    ledger = Ledger(client, Keys(settings.key_prefix), CodeVault(settings.code_keys))
    try:
        done = ledger.rotate_codes()
    except redis.RedisError as exc:
        print(f"rewardrelay: Redis unreachable: {type(exc).__name__}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        client.close()
    print(
        f"re-sealed {done.resealed}, already current {done.current}, "
        f"sealed from clear {done.sealed_plain}, unreadable {len(done.unreadable)}"
    )
    if done.unreadable:
        shown = ", ".join(done.unreadable[:SHOWN_UNREADABLE])
        more = len(done.unreadable) - SHOWN_UNREADABLE
        print(f"no key in CODE_KEYS opens: {shown}" + (f" (+{more} more)" if more > 0 else ""))
        return EXIT_FAILED
    return EXIT_OK
