"""``rewardrelay dlq``: list, show, replay and discard dead letters over the admin API.

``list`` and ``show`` print tables for people (a header row, UTC times in ISO 8601) and
the API's JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rewardrelay.commands.common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_url_argument,
    admin_headers,
    client_context,
    iso_utc,
    ok_json,
    print_json,
    quote_id,
    request,
    whole_number,
)
from worker.stores.models import UnitId

__all__ = ["DEAD_LETTER_LIMIT_MAX", "dead_letter_id", "format_table", "parse_since", "register"]

# The admin API's cap on a listing or bulk replay (webhooks.admin.BULK_REPLAY_MAX, not
# imported here: it would load Flask; a test keeps them equal).
DEAD_LETTER_LIMIT_MAX = 1000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
ID_HELP = "the letter's id, EVENT_ID:LINE:INDEX (as `dlq list` shows it)"
# Longest detail shown in a listing (``dlq show`` shows it whole).
DETAIL_CHARS = 120
# Fields of one letter shown by ``dlq show``, in order; others follow alphabetically.
LETTER_FIELDS = (
    "id",
    "event_id",
    "status",
    "created_at",
    "source",
    "provider",
    "product",
    "reason",
    "status_code",
    "error_type",
    "detail",
    "provider_message",
    "unrouted_field",
    "unrouted_value",
    "rules_file",
)
# Columns of a letter's attempt history: (header, attempt field).
ATTEMPT_COLUMNS = (
    ("#", "attempt"),
    ("AT (UTC)", "at"),
    ("MODE", "mode"),
    ("OUTCOME", "outcome"),
    ("REASON", "reason"),
    ("HTTP", "status_code"),
    ("MS", "duration_ms"),
    ("TASK", "task_id"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, discard")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", choices=("coniq", "internal"))
        p.add_argument("--provider", help="e.g. ifeelgoods, rewardops")
        p.add_argument("--reason", help="failure reason, e.g. rejected, exhausted")
        p.add_argument("--since", help="Unix seconds, ISO 8601 time, or a duration (2h, 1d)")
        p.add_argument(
            "--limit",
            type=whole_number(1, DEAD_LETTER_LIMIT_MAX),
            default=None,
            help=f"at most this many letters (1 to {DEAD_LETTER_LIMIT_MAX})",
        )

    dlq_list = dlq_sub.add_parser("list", help="dead letters waiting for an operator")
    filters(dlq_list)
    dlq_list.add_argument("--json", action="store_true")
    add_url_argument(dlq_list)
    dlq_show = dlq_sub.add_parser("show", help="one dead letter with its attempt history")
    dlq_show.add_argument("id", type=dead_letter_id, help=ID_HELP)
    dlq_show.add_argument("--json", action="store_true")
    add_url_argument(dlq_show)
    dlq_replay = dlq_sub.add_parser("replay", help="replay one, or --all matching the filters")
    dlq_replay.add_argument("id", nargs="?", type=dead_letter_id, help=ID_HELP)
    dlq_replay.add_argument("--all", action="store_true")
    dlq_replay.add_argument("--dry-run", action="store_true")
    dlq_replay.add_argument(
        "--force",
        action="store_true",
        help="also replay unroutable letters whose routing rules are unchanged",
    )
    filters(dlq_replay)
    add_url_argument(dlq_replay)
    dlq_discard = dlq_sub.add_parser("discard", help="discard one dead letter (recorded)")
    dlq_discard.add_argument("id", type=dead_letter_id, help=ID_HELP)
    dlq_discard.add_argument("--reason", default="")
    add_url_argument(dlq_discard)
    dlq.set_defaults(handler=cmd_dlq)


def dead_letter_id(raw: str) -> str:
    """An argparse ``type``: a dead letter's id is its unit's, ``EVENT_ID:LINE:INDEX``.

    Anything else cannot name a letter: said here (exit 2), not as the API's "not found".
    """
    try:
        UnitId.parse(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a dead-letter id: one is EVENT_ID:LINE:INDEX, e.g. "
            "evt_01JD7Q2M3X:0:1 (the ID column of `rewardrelay dlq list`)"
        ) from None
    return raw


def parse_since(raw: str | None) -> str | None:
    """Unix seconds, an ISO 8601 time, or a duration ago (``30m``, ``2h``, ``1d``)."""
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        return str(float(raw))
    except ValueError:
        pass
    match = _DURATION.match(raw)
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return str(round(time.time() - seconds, 3))
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--since {raw!r}: give Unix seconds, an ISO 8601 time or a duration like 2h",
            EXIT_USAGE,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(moment.timestamp())


def _filters(args: argparse.Namespace) -> dict[str, str]:
    filters = {
        "source": args.source,
        "provider": args.provider,
        "reason": args.reason,
        "since": parse_since(args.since),
    }
    return {name: value for name, value in filters.items() if value}


def _letter_url(base: str, letter_id: str) -> str:
    return f"{base}/dead-letters/{quote_id(letter_id)}"


def cmd_dlq(args: argparse.Namespace) -> int:
    context = client_context(args)
    base = context.base_url
    headers = admin_headers(context.settings)
    action: str = args.dlq_command
    if action == "list":
        params = _filters(args)
        if args.limit:
            params["limit"] = str(args.limit)
        body = ok_json(request("GET", f"{base}/dead-letters", headers=headers, params=params))
        if args.json:
            print_json(body)
        else:
            _print_letters(list(body.get("items", [])))
        return EXIT_OK
    if action == "show":
        body = ok_json(request("GET", _letter_url(base, args.id), headers=headers))
        if args.json:
            print_json(body)
        else:
            _print_letter(body)
        return EXIT_OK
    if action == "replay":
        return _replay(args, base, headers)
    # discard
    payload = {"reason": args.reason} if args.reason else None
    response = request("DELETE", _letter_url(base, args.id), headers=headers, json=payload)
    body = ok_json(response)
    print(f"{body.get('id', args.id)}  {body.get('status', 'discarded')}")
    return EXIT_OK


def _replay(args: argparse.Namespace, base: str, headers: Mapping[str, str]) -> int:
    if args.id and args.all:
        raise CommandError("give a dead-letter id or --all, not both", EXIT_USAGE)
    if args.id:
        if args.dry_run:
            raise CommandError("--dry-run applies to --all", EXIT_USAGE)
        response = request(
            "POST",
            _letter_url(base, args.id) + "/replay",
            headers=headers,
            json={"force": True} if args.force else None,
        )
        body = ok_json(response)
        print(f"{body.get('id', args.id)}  {body.get('result', 'replayed')}")
        return EXIT_OK
    if not args.all:
        raise CommandError("give a dead-letter id, or --all with optional filters", EXIT_USAGE)
    payload: dict[str, Any] = {**_filters(args), "dry_run": bool(args.dry_run)}
    if args.force:
        payload["force"] = True
    if args.limit:
        payload["limit"] = args.limit
    response = request("POST", f"{base}/dead-letters/replay", headers=headers, json=payload)
    body = ok_json(response)
    replayed = list(body.get("replayed", []))
    verb = "would replay" if body.get("dry_run") else "replayed"
    print(f"matched {body.get('matched', 0)}, {verb} {len(replayed)}")
    for letter_id in replayed:
        print(f"  {letter_id}")
    unchanged = list(body.get("rules_unchanged", []))
    if unchanged:
        print("not replayed, unroutable under unchanged rules (--force to replay anyway):")
        for letter_id in unchanged:
            print(f"  {letter_id}")
    return EXIT_OK


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


def _text(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def _detail(letter: Mapping[str, Any]) -> str:
    """The letter's detail, or ``-`` when it only repeats the reason."""
    detail = str(letter.get("detail") or "")
    return "-" if detail in ("", str(letter.get("reason") or "")) else detail


def _print_letters(items: Sequence[Mapping[str, Any]]) -> None:
    if not items:
        print("no dead letters waiting")
        return
    header = ("ID", "CREATED (UTC)", "SOURCE", "PROVIDER", "REASON", "HTTP", "ATTEMPTS", "DETAIL")
    rows = [
        (
            _text(item.get("id")),
            iso_utc(item.get("created_at")),
            _text(item.get("source")),
            _text(item.get("provider")),
            _text(item.get("reason")),
            _text(item.get("status_code")),
            _text(item.get("attempts", 0)),
            _detail(item)[:DETAIL_CHARS],
        )
        for item in items
    ]
    for line in format_table(header, rows):
        print(line)
    print(f"{len(items)} dead letter(s)")


def _print_letter(letter: Mapping[str, Any]) -> None:
    history = letter.get("attempts")
    names = [name for name in LETTER_FIELDS if name in letter]
    names += sorted(set(letter) - set(LETTER_FIELDS) - {"attempts"})
    width = max(len(name) for name in [*names, "attempts"])
    for name in names:
        value = letter[name]
        if name == "created_at":
            shown = iso_utc(value)
        elif name == "detail":
            shown = _detail(letter)
        else:
            shown = _text(value if not isinstance(value, dict | list) else _compact(value))
        print(f"{name:{width}}  {shown}")
    if not isinstance(history, list):
        print(f"{'attempts':{width}}  {_text(history)}")
        return
    print(f"{'attempts':{width}}  {len(history)}")
    if not history:
        return
    rows = []
    for attempt in history:
        row = []
        for _, key in ATTEMPT_COLUMNS:
            value = attempt.get(key) if isinstance(attempt, Mapping) else None
            row.append(iso_utc(value, milliseconds=True) if key == "at" else _text(value))
        rows.append(row)
    print()
    for line in format_table([header for header, _ in ATTEMPT_COLUMNS], rows):
        print(f"  {line}")


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
