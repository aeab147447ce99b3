"""``rewardrelay status``: the fulfilment state of an event's units.

Exit 0 when every unit is done, 1 when any failed, 3 while any is in progress, 4 when the
state could not be read. ``--wait`` polls until terminal and reports each change of the
units' states on stderr, so a long wait is never silent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rewardrelay.commands.common import (
    EXIT_FAILED,
    EXIT_IN_PROGRESS,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CommandError,
    add_url_argument,
    admin_headers,
    client_context,
    describe_error,
    iso_utc,
    print_json,
    quote_id,
    request,
    seconds,
)

__all__ = ["register", "status_exit_code"]

# Interval between polls of ``status --wait``.
STATUS_POLL_SECONDS = 0.5
DONE_STATES = frozenset({"fulfilled", "ignored"})
FAILED_STATES = frozenset({"dead_lettered", "unroutable"})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser("status", help="fulfilment state of an event's units")
    status.add_argument("event_id")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.add_argument(
        "--wait",
        type=seconds(zero=True),
        default=0.0,
        metavar="SECONDS",
        help="poll until terminal, reporting each state change on stderr",
    )
    add_url_argument(status)
    status.set_defaults(handler=cmd_status)


def status_exit_code(units: Sequence[Mapping[str, Any]]) -> int:
    """0 when every unit is done, 1 when any failed, 3 while any is still in progress."""
    states = {str(unit.get("state", "")) for unit in units}
    if states & FAILED_STATES:
        return EXIT_FAILED
    if states <= DONE_STATES:
        return EXIT_OK
    return EXIT_IN_PROGRESS


class _Progress:
    """Writes one stderr line whenever what ``--wait`` sees changes."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self.last = ""

    def show(self, summary: str) -> None:
        if not self.enabled or summary == self.last:
            return
        self.last = summary
        elapsed = time.monotonic() - self.started
        print(f"rewardrelay: [{elapsed:5.1f}s] {summary}", file=sys.stderr, flush=True)


def _summary(units: Sequence[Mapping[str, Any]]) -> str:
    if not units:
        return "no units yet"
    return ", ".join(f"{unit.get('id')} {unit.get('state')}" for unit in units)


def cmd_status(args: argparse.Namespace) -> int:
    context = client_context(args)
    headers = admin_headers(context.settings)
    url = f"{context.base_url}/fulfillments/{quote_id(args.event_id)}"
    deadline = time.monotonic() + max(0.0, args.wait or 0.0)
    progress = _Progress(enabled=bool(args.wait))
    while True:
        try:
            response = request("GET", url, headers=headers)
        except CommandError as exc:
            if time.monotonic() < deadline:
                progress.show(f"waiting: {exc}")
                time.sleep(STATUS_POLL_SECONDS)
                continue
            raise CommandError(str(exc), EXIT_UNAVAILABLE) from None
        if not response.is_success:
            raise CommandError(describe_error(response), EXIT_UNAVAILABLE)
        body = response.json()
        units = list(body.get("units", []))
        code = status_exit_code(units)
        progress.show(_summary(units))
        if code != EXIT_IN_PROGRESS or time.monotonic() >= deadline:
            break
        time.sleep(STATUS_POLL_SECONDS)
    if args.json:
        print_json(body)
    else:
        _print_status(body, units)
    return code


def _print_status(body: Mapping[str, Any], units: Sequence[Mapping[str, Any]]) -> None:
    print(
        f"{body.get('event_id')}  {body.get('source')} {body.get('type')}  "
        f"received {iso_utc(body.get('received_at'))}  state {body.get('state')}"
    )
    for unit in units:
        parts = [
            f"  {unit.get('id')}",
            f"{unit.get('state')}",
            f"provider={unit.get('provider') or '-'}",
            f"attempts={unit.get('attempts', 0)}",
        ]
        if unit.get("waits"):  # handed back by a provider lane, no call made
            parts.append(f"waits={unit['waits']}")
        if unit.get("provider_ref"):
            parts.append(f"ref={unit['provider_ref']}")
        if unit.get("codes"):
            parts.append("codes=" + ",".join(map(str, unit["codes"])))
        if unit.get("next_attempt_at") and unit.get("state") not in DONE_STATES | FAILED_STATES:
            parts.append(f"next={iso_utc(unit['next_attempt_at'])}")
        if unit.get("dead_letter_id"):
            parts.append(f"dead_letter={unit['dead_letter_id']}")
        error = unit.get("last_error")
        if error and unit.get("state") not in DONE_STATES:
            if isinstance(error, dict):
                error = error.get("detail") or error.get("reason") or json.dumps(error)
            parts.append(f"last_error={error}")
        print("  ".join(parts))
