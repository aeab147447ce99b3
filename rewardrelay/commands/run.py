"""``rewardrelay run``: the whole stack on embedded defaults (see ``rewardrelay.stack``)."""

from __future__ import annotations

import argparse

from rewardrelay.commands.common import port_number

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the whole stack on embedded defaults")
    run.add_argument(
        "--port", type=port_number(), default=None, help="receiver port (default $PORT or 8000)"
    )
    run.add_argument("--no-flower", action="store_true", help="do not start Flower")
    run.add_argument(
        "--flower-port",
        type=port_number(),
        default=None,
        help="Flower port (default $FLOWER_PORT or 5555)",
    )
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from rewardrelay.stack import run_stack

    return run_stack(port=args.port, flower=not args.no_flower, flower_port=args.flower_port)
