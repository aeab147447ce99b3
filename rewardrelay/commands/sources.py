"""``rewardrelay sources refused``: what the reward sources hold for an operator.

    rewardrelay sources refused list [SOURCE] [--json]       source, kind, since, id, reason
    rewardrelay sources refused retry SOURCE ID              back on the source's next run
    rewardrelay sources refused discard SOURCE ID [--reason] dropped for good (audited)

Through the admin API (``/sources/{source}/refused``), like ``rewardrelay dlq``; the kinds
and what a retry does are in :mod:`worker.stores.refused`. Like every client command it
imports neither the edge nor the stores (a test keeps ``SOURCES`` equal to theirs).
"""

from __future__ import annotations

import argparse
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
from rewardrelay.commands.dlq import format_table

__all__ = ["SOURCES", "register"]

# The sources that hold items for operators (worker.stores.refused.SOURCES).
SOURCES = ("ignico", "orders-platform", "coniq-outbound")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sources = sub.add_parser("sources", help="reward sources: items held for an operator")
    groups = sources.add_subparsers(dest="sources_group", required=True, metavar="GROUP")
    refused = groups.add_parser(
        "refused", help="refused events, failed settlements and failed Coniq records"
    )
    actions = refused.add_subparsers(dest="refused_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="held items (every source unless one is named)")
    listing.add_argument("source", nargs="?", choices=SOURCES)
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    add_url_argument(listing)
    retry = actions.add_parser("retry", help="put an item back on its source's next run")
    retry.add_argument("source", choices=SOURCES)
    retry.add_argument("id")
    add_url_argument(retry)
    discard = actions.add_parser("discard", help="drop an item for good (recorded)")
    discard.add_argument("source", choices=SOURCES)
    discard.add_argument("id")
    discard.add_argument("--reason", default="")
    add_url_argument(discard)
    sources.set_defaults(handler=cmd_sources)


def cmd_sources(args: argparse.Namespace) -> int:
    context = client_context(args)
    base = context.base_url
    headers = admin_headers(context.settings)
    action: str = args.refused_command
    if action == "list":
        chosen = [args.source] if args.source else list(SOURCES)
        bodies = [
            ok_json(request("GET", f"{base}/sources/{source}/refused", headers=headers))
            for source in chosen
        ]
        if args.json:
            print_json(bodies if len(bodies) > 1 else bodies[0])
        else:
            _print_items([item for body in bodies for item in body.get("items", [])])
        return EXIT_OK
    path = f"{base}/sources/{args.source}/refused/{quote(args.id, safe=':')}"
    if action == "retry":
        body = ok_json(request("POST", f"{path}/retry", headers=headers))
        print(f"{body.get('id', args.id)}  queued for {args.source}'s next run")
        return EXIT_OK
    payload = {"reason": args.reason} if args.reason else None
    body = ok_json(request("DELETE", path, headers=headers, json=payload))
    print(f"{body.get('id', args.id)}  {body.get('status', 'discarded')}")
    return EXIT_OK


def _print_items(items: Sequence[Mapping[str, Any]]) -> None:
    if not items:
        print("no source item held")
        return
    rows = [
        [
            str(item.get("source", "-")),
            str(item.get("kind", "-")),
            iso_utc(item.get("at")),
            str(item.get("id")),
            str(item.get("reason") or "-"),
        ]
        for item in items
    ]
    for line in format_table(["SOURCE", "KIND", "HELD SINCE (UTC)", "ID", "REASON"], rows):
        print(line)
    print(f"{len(items)} item(s)")
