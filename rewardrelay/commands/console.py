"""``rewardrelay console``: the operator console's address and the admin token to sign in.

An operator's local tool: the token printed is the one this operator's settings (or the
local data directory) hold, the same one ``status`` and ``dlq`` send. ``--open`` also
opens the console in the default browser.
"""

from __future__ import annotations

import argparse
import sys

from rewardrelay.commands.common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_url_argument,
    client_context,
    request,
)

__all__ = ["register"]

CONSOLE_PATH = "/admin/"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    console = sub.add_parser("console", help="the operator console's URL and admin token")
    console.add_argument("--open", action="store_true", help="open it in the default browser")
    add_url_argument(console)
    console.set_defaults(handler=cmd_console)


def cmd_console(args: argparse.Namespace) -> int:
    context = client_context(args)
    context.settings.require("ADMIN_TOKEN")
    url = context.base_url + CONSOLE_PATH
    print(f"console  {url}")
    print(f"token    {context.settings.admin_token}")
    try:
        request("GET", context.base_url + "/healthz", headers={})
    except CommandError as exc:
        print(f"rewardrelay: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.open:
        import webbrowser

        if not webbrowser.open(url):
            print("rewardrelay: no browser to open; open the URL above", file=sys.stderr)
    return EXIT_OK
