"""``rewardrelay erase --email ADDRESS | --customer-id ID``: erase one customer's data.

Runs the same erasure as ``POST /erasures`` (``worker.stores.erasure``) directly against
the store (``REDIS_URL``; next to a local ``rewardrelay run``, the stack's own Redis), so
it works with the web edge down too. Prints what it erased, counted by record kind; the
address is never printed or logged: the customer is shown by the keyed hash the audit
log records.

Exit status: 0 erased; 1 refused because units are still in flight (named, nothing of
theirs erased: retry once they are finished), or Redis unreachable; 2 bad usage or
setting.
"""

from __future__ import annotations

import argparse
import json
import time

from rewardrelay.commands.common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    print_json,
    redis_unreachable,
)
from rewardrelay.datadir import DataDir
from worker.config import Settings

__all__ = ["register", "cmd_erase"]

REDIS_TIMEOUT_SECONDS = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    erase = sub.add_parser("erase", help="erase one customer's personal data (GDPR request)")
    who = erase.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", help="the customer's email address")
    who.add_argument("--customer-id", help="the customer's Coniq customer id")
    erase.add_argument("--json", action="store_true", help="print the counts as JSON")
    erase.set_defaults(handler=cmd_erase)


def cmd_erase(args: argparse.Namespace) -> int:
    # Imported here: the other commands start without Redis or the stores (test_send).
    import redis

    from tasks.bookkeeping import side_records
    from worker.redis_connect import redis_client
    from worker.stores.erasure import Erasure, InFlightError
    from worker.stores.keys import Keys
    from worker.stores.personal_data import SubjectKind, hasher_for

    settings = Settings.from_env(DataDir.from_env().client_environ())
    settings.require("REDIS_URL")
    kind = SubjectKind.EMAIL if args.email is not None else SubjectKind.CUSTOMER_ID
    value = str(args.email if args.email is not None else args.customer_id)
    if not value.strip() or (kind is SubjectKind.EMAIL and "@" not in value):
        option = "--" + kind.value.replace("_", "-")
        raise CommandError(f"erase: {option} is not an email address or id", EXIT_USAGE)
    client = redis_client(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    keys = Keys(settings.key_prefix)
    erasure = Erasure(client, keys, hasher_for(settings), side_records(keys))
    try:
        report = erasure.erase(kind, value, actor="cli", now=time.time())
    except InFlightError as exc:
        raise CommandError(
            "erase refused: units still in flight (retry once they are finished): "
            + json.dumps(exc.units, sort_keys=True)
        ) from None
    except redis.RedisError:
        raise CommandError(redis_unreachable(settings.redis_url)) from None
    finally:
        client.close()
    if args.json:
        print_json(report.to_dict())
    else:
        counts = "  ".join(f"{name}={count}" for name, count in report.counts.items())
        print(f"erased subject {report.subject}: {counts}")
    return EXIT_OK
