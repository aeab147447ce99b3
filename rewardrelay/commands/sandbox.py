"""``rewardrelay sandbox NAME``: a provider or source sandbox in the foreground."""

from __future__ import annotations

import argparse
import signal

from rewardrelay.commands.common import EXIT_OK, EXIT_USAGE, CommandError, port_number

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sandbox = sub.add_parser("sandbox", help="run a provider sandbox in the foreground")
    # Not a fixed choice: sandboxes.server knows which sandboxes exist (and says so).
    sandbox.add_argument("name", help="ifeelgoods, rewardops, ... (see sandboxes.server)")
    sandbox.add_argument(
        "--port", type=port_number(free=True), default=0, help="port (default: a free one)"
    )
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.set_defaults(handler=cmd_sandbox)


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
