"""``rewardrelay lanes``: each provider lane's state, and pause/resume, over the admin API.

    rewardrelay lanes                               state, reason, since, units waiting
    rewardrelay lanes pause PROVIDER [--reason T]   hold a provider (audit-logged, by you)
    rewardrelay lanes resume PROVIDER               open it; waiting units go oldest first

The table is for people (UTC times in ISO 8601); ``--json`` prints the API's JSON.
"""

from __future__ import annotations

import argparse
import os
import pwd
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from rewardrelay.commands.common import (
    EXIT_OK,
    add_url_argument,
    admin_headers,
    client_context,
    iso_utc,
    ok_json,
    print_json,
    request,
)

__all__ = ["format_lanes", "register"]

COLUMNS = ("PROVIDER", "STATE", "REASON", "SINCE (UTC)", "WAITING", "OLDEST (UTC)", "IN FLIGHT")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lanes = sub.add_parser("lanes", help="provider lanes: state, pause, resume")
    lanes.add_argument("--json", action="store_true", help="print the API's JSON")
    add_url_argument(lanes)
    actions = lanes.add_subparsers(dest="lanes_command", metavar="ACTION")
    for name, text in (
        ("pause", "hold a provider: no calls until resumed"),
        ("resume", "open a provider lane again"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("provider", help="ifeelgoods or rewardops")
        action.add_argument("--reason", default="", help="why (kept in the audit log)")
        add_url_argument(action)
    lanes.set_defaults(handler=cmd_lanes)


def cmd_lanes(args: argparse.Namespace) -> int:
    """Print the lanes, or pause/resume one.

    Raises:
        SettingsError: a setting (``ADMIN_TOKEN``, ``PORT``) is missing or malformed.
        CommandError: the receiver is unreachable or refused the request.
    """
    context = client_context(args)
    headers = admin_headers(context.settings)
    action = getattr(args, "lanes_command", None)
    if action in ("pause", "resume"):
        url = f"{context.base_url}/lanes/{quote(args.provider, safe='')}/{action}"
        body = ok_json(
            request("POST", url, headers=headers, json={"reason": args.reason, "by": _operator()})
        )
        print(format_lanes([body]))
        return EXIT_OK
    body = ok_json(request("GET", f"{context.base_url}/lanes", headers=headers))
    if args.json:
        print_json(body)
    else:
        print(format_lanes(list(body.get("items", []))))
    return EXIT_OK


def _operator() -> str:
    """Who runs the command, for the audit log."""
    try:
        return f"cli:{pwd.getpwuid(os.getuid()).pw_name}"[:100]
    except KeyError:  # a uid with no passwd entry (some containers)
        return "cli"


def format_lanes(items: Sequence[Mapping[str, Any]]) -> str:
    """A table for people: one row per lane."""
    rows = [COLUMNS]
    for item in items:
        rows.append(
            (
                str(item.get("provider")),
                str(item.get("state")),
                str(item.get("reason") or "-"),
                iso_utc(item.get("since")),
                str(item.get("units_waiting", 0)),
                iso_utc(item.get("oldest_waiting_since")),
                str(item.get("in_flight", 0)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
