"""``rewardrelay send``: sign and post an event, a sample reward unless ``--file`` is given.

With ``--fault KIND[:VALUE]`` it first asks the sandbox the event will be routed to for
that fault on its next order call (see ``rewardrelay.commands.faults``), so a dead letter
or a retry can be made on purpose.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from rewardrelay.commands.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_url_argument,
    client_context,
    request,
)

__all__ = ["load_event_file", "new_event_id", "register", "sample_event"]

INGEST_PATHS = {"coniq": "/webhooks/coniq", "internal": "/events"}
SECRET_VARIABLES = {"coniq": "CONIQ_WEBHOOK_SECRETS", "internal": "EVENT_SECRETS"}
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = sub.add_parser("send", help="sign and post an event (a sample reward by default)")
    send.add_argument(
        "--source",
        choices=("coniq", "internal"),
        default=None,
        help="the ingest endpoint; default: internal for a reward.granted file, else coniq",
    )
    add_url_argument(send)
    send.add_argument("--file", help="event envelope JSON to send instead of the sample")
    send.add_argument(
        "--fault",
        metavar="KIND[:VALUE]",
        help="first arm this fault on the routed provider's sandbox for its next order call, "
        "e.g. permanent:422 (a dead letter) or status:503 (one retry)",
    )
    send.set_defaults(handler=cmd_send)


def new_event_id() -> str:
    """``evt_`` + a ULID (48-bit milliseconds + 80 random bits, Crockford base32)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(secrets.token_bytes(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_event(source: str, event_id: str | None = None) -> dict[str, Any]:
    """A valid sample event: a Coniq ``reward.issued`` for offer 1001 (Ifeelgoods in the
    example rules) or an internal ``reward.granted`` of ``GIFT10``."""
    event_id = event_id or new_event_id()
    suffix = event_id[-8:].lower()
    if source == "coniq":
        data: dict[str, Any] = {
            "customer": {
                "id": f"cus_{suffix}",
                "email": f"ada+{suffix}@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
            },
            "subscription": {"id": f"sub_{suffix}", "program_id": "prog_demo"},
            "reward": {
                "id": f"rwd_{suffix}",
                "offer_id": "1001",
                "name": "$10 gift card",
                "expiry_date": (date.today() + timedelta(days=90)).isoformat(),
            },
        }
        event_type = "reward.issued"
    else:
        data = {
            "recipient": {
                "email": f"grace+{suffix}@example.com",
                "first_name": "Grace",
                "last_name": "Hopper",
            },
            "rewards": [{"reward_code": "GIFT10", "quantity": 1}],
            "reference": f"rr-send-{suffix}",
        }
        event_type = "reward.granted"
    return {
        "id": event_id,
        "type": event_type,
        "created_at": _now_iso(),
        "account_id": "demo-mall",
        "data": data,
    }


def load_event_file(path: Path) -> dict[str, Any]:
    """An event envelope from a JSON file, sent as it is (an id is added only if absent).

    Raises:
        CommandError: unreadable, not JSON, not an object, or a bad id (exit 2).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CommandError(f"{path} is not JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(document, dict):
        raise CommandError(f"{path} must hold a JSON object (an event envelope)", EXIT_USAGE)
    if "id" not in document:
        document = {"id": new_event_id(), **document}
    if not isinstance(document["id"], str) or not document["id"]:
        raise CommandError(f"{path}: the event id must be a non-empty string", EXIT_USAGE)
    return document


def guess_source(event: dict[str, Any] | None) -> str:
    """``reward.granted`` only arrives on the internal endpoint; everything else is Coniq's."""
    return "internal" if event is not None and event.get("type") == "reward.granted" else "coniq"


def cmd_send(args: argparse.Namespace) -> int:
    # Imported here, and from worker (pure, stdlib only): importing the edge's package
    # (Flask, Celery, Sentry) for the signer more than doubled the time of a send.
    from worker.signing import signed_headers

    context = client_context(args)
    event = load_event_file(Path(args.file)) if args.file else None
    source: str = args.source or guess_source(event)
    if event is None:
        event = sample_event(source)
    settings = context.settings
    settings.require(SECRET_VARIABLES[source])
    secret = (settings.coniq_webhook_secrets if source == "coniq" else settings.event_secrets)[0]
    event_id = str(event["id"])
    if args.fault:
        from rewardrelay.commands.faults import arm_fault_for

        for line in arm_fault_for(settings, source, event, args.fault):
            print(line, file=sys.stderr)
    raw = json.dumps(event, separators=(",", ":")).encode()
    path = INGEST_PATHS[source]
    base = context.base_url
    url = base if base.endswith(path) else base + path
    headers = signed_headers(raw, secret, event_id)
    try:
        response = request("POST", url, headers=headers, content=raw)
    except CommandError as exc:
        print(f"rewardrelay: {exc}", file=sys.stderr)
        print(event_id)
        return EXIT_FAILED
    print(f"HTTP {response.status_code}")
    body = response.text.strip()
    if body:
        print(body)
    print(event_id)
    return EXIT_OK if response.is_success else EXIT_FAILED
