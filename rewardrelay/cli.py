"""The ``rewardrelay`` command line: builds the parser and dispatches to a command.

    rewardrelay run        the whole stack on embedded defaults (Redis, sandboxes, web,
                           worker, beat, relay, Flower)
    rewardrelay relay      the outbox relay and scheduler (a Procfile process)
    rewardrelay worker     WORKER_PROCESSES Celery workers (a Procfile process)
    rewardrelay sandbox    run a provider sandbox in the foreground
    rewardrelay send       sign and post an event (a sample reward by default)
    rewardrelay status     the fulfilment state of an event's units
    rewardrelay dlq        list, show, replay and discard dead letters
    rewardrelay lanes      provider lanes: state, pause PROVIDER, resume PROVIDER
    rewardrelay check      settings, rules, Redis, broker and provider reachability
    rewardrelay connect    authorize access to a reward source once (orders-platform)
    rewardrelay console    the operator console's URL and admin token
    rewardrelay erase      erase one customer's personal data (from the store)

Each command lives in its own module under ``rewardrelay.commands``. The client commands
(``send``, ``status``, ``dlq``, ``check``, ``console``) talk to the HTTP API and need no
configuration next to a local ``rewardrelay run``: unset secrets and the admin token come
from the local data directory (``RR_DATA_DIR``, default ``./.rewardrelay``).

Exit codes: 0 success; 1 failure (an HTTP error, a failed check, an unreachable receiver
or Redis, a dead-lettered or unroutable unit for ``status``); 2 invalid settings or
usage; 3 ``status`` still in progress; 4 ``status`` could not be read (unknown event,
refused token, unreachable).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from rewardrelay.commands import COMMAND_MODULES
from rewardrelay.commands.common import EXIT_FAILED, EXIT_USAGE, CommandError
from worker.config import SettingsError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewardrelay",
        description="Loyalty events in, rewards out, exactly once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
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
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
