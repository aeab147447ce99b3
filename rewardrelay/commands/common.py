"""What the client commands share: exit codes, the receiver's address, the admin token,
HTTP calls that fail in one readable line, and the output formats (JSON, UTC times).

Kept light on imports (no Flask, Celery or Sentry): ``send`` and ``status`` are run by
hand and in scripts, so their start-up time is most of their run time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from rewardrelay.datadir import DataDir
from worker.config import Settings, SettingsError

__all__ = [
    "EXIT_FAILED",
    "EXIT_IN_PROGRESS",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "ClientContext",
    "CommandError",
    "add_url_argument",
    "admin_headers",
    "client_context",
    "describe_error",
    "iso_utc",
    "ok_json",
    "port_number",
    "print_json",
    "quote_id",
    "redis_unreachable",
    "request",
    "safe_url",
    "seconds",
    "start_the_stack",
    "whole_number",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_IN_PROGRESS = 3
EXIT_UNAVAILABLE = 4
DEFAULT_PORT = 8000
# Timeout of one HTTP call to the receiver's API.
HTTP_TIMEOUT_SECONDS = 10.0


class CommandError(Exception):
    """A command failed in an expected way; ``str()`` is printed, ``code`` is the exit."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class ClientContext:
    """Settings, completed environment and receiver base URL of one client command."""

    def __init__(self, settings: Settings, env: Mapping[str, str], base_url: str) -> None:
        self.settings = settings
        self.env = env
        self.base_url = base_url


def quote_id(value: str) -> str:
    """An event or dead-letter id as one URL path segment, quoted as the edge quotes it
    (``webhooks.paths.quote_id``, not imported here: it would load Flask).

    Reserved characters are percent-encoded (``:`` is kept, so unit ids stay readable),
    and so are the dots of an id that is only ``.`` or ``..``: left as they are, they are
    a dot-segment that the HTTP client resolves away, and the request goes elsewhere.
    """
    quoted = quote(value, safe=":")
    if quoted in (".", ".."):
        return quoted.replace(".", "%2E")
    return quoted


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``minimum`` (to ``maximum``). argparse exits 2
    with one line naming the option: ``argument --limit: must be ..., got '0'``."""
    span = f"from {minimum} to {maximum}" if maximum is not None else f"{minimum} or more"

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, got {raw!r}")
        return value

    return parse


def port_number(*, free: bool = False) -> Callable[[str], int]:
    """An argparse ``type``: a TCP port, 1 to 65535 (0 too with ``free``: a free one)."""
    minimum = 0 if free else 1

    def parse(raw: str) -> int:
        if not raw.strip().isdigit() or not minimum <= int(raw) <= 65535:
            zero = " (0: a free one)" if free else ""
            raise argparse.ArgumentTypeError(
                f"must be a port number from {minimum} to 65535{zero}, got {raw!r}"
            )
        return int(raw)

    return parse


def seconds(*, zero: bool) -> Callable[[str], float]:
    """An argparse ``type``: a finite number of seconds, above 0 (or 0 or more with
    ``zero``); a negative wait or timeout is refused, never treated as none."""
    span = "0 or more" if zero else "above 0"

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be a number of seconds, {span}, got {raw!r}")
        return value

    return parse


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="receiver base URL (default $RECEIVER_URL, else http://127.0.0.1:$PORT)"
    )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise SettingsError(name, f"must be a port number from 1 to 65535, got {raw!r}")
    return int(raw)


def client_context(args: argparse.Namespace) -> ClientContext:
    """Settings, environment and receiver URL: ``--url``, else ``RECEIVER_URL``, else
    ``http://127.0.0.1:$PORT`` (a running local stack records both).

    Raises:
        SettingsError: a setting (or ``PORT``) is malformed.
    """
    env = DataDir.from_env().client_environ()
    settings = Settings.from_env(env)
    url = getattr(args, "url", None)
    if not url and env.get("RECEIVER_URL", "").strip():
        url = settings.receiver_url
    if not url:
        url = f"http://127.0.0.1:{_port(env, 'PORT', DEFAULT_PORT)}"
    return ClientContext(settings, env, url.rstrip("/"))


def admin_headers(settings: Settings) -> dict[str, str]:
    settings.require("ADMIN_TOKEN")
    return {"Authorization": f"Bearer {settings.admin_token}", "Accept": "application/json"}


def safe_url(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def start_the_stack(otherwise: str) -> str:
    """The fix every stack-down line names: the local stack, or ``otherwise`` (an address
    to give, e.g. ``set REDIS_URL``)."""
    return f"start `rewardrelay run`, or {otherwise}"


def receiver_unreachable(url: str, exc: httpx.HTTPError) -> str:
    """One line naming the cause and the fix, for a receiver that does not answer."""
    cause = "connection refused" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
    return f"cannot reach the receiver at {_origin(url)} ({cause}) — " + start_the_stack(
        "give --url / set RECEIVER_URL"
    )


def redis_unreachable(url: str) -> str:
    """The same line for Redis."""
    return f"cannot reach Redis at {safe_url(url)} — " + start_the_stack("set REDIS_URL")


def request(method: str, url: str, *, headers: Mapping[str, str], **kwargs: Any) -> httpx.Response:
    """One call to the receiver; a transport failure is a ``CommandError`` saying what to do.

    Raises:
        CommandError: the receiver did not answer (refused, timed out, reset).
    """
    try:
        return httpx.request(
            method, url, headers=dict(headers), timeout=HTTP_TIMEOUT_SECONDS, **kwargs
        )
    except httpx.HTTPError as exc:
        raise CommandError(receiver_unreachable(url, exc)) from None


def describe_error(response: httpx.Response) -> str:
    """One line for a non-2xx answer: the problem's type and detail when there is one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "title" in body):
        kind = str(body.get("type", "")).rsplit("/", 1)[-1]
        detail = body.get("detail") or body.get("title")
        errors = body.get("errors")
        extra = f" {json.dumps(errors, sort_keys=True)}" if errors else ""
        return f"HTTP {response.status_code} {kind}: {detail}{extra}".replace(" :", ":")
    text = response.text.strip().splitlines()
    return f"HTTP {response.status_code}: {text[0][:200] if text else response.reason_phrase}"


def ok_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer.

    Raises:
        CommandError: the answer is not 2xx, or not JSON.
    """
    if not response.is_success:
        raise CommandError(describe_error(response))
    try:
        body = response.json()
    except ValueError:
        raise CommandError(f"HTTP {response.status_code}: the answer is not JSON") from None
    return body if isinstance(body, dict) else {"value": body}


def print_json(document: Any) -> None:
    """``--json`` output: indented, key-sorted, and always ending with a newline."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def iso_utc(value: Any, *, milliseconds: bool = False) -> str:
    """Unix seconds as ISO 8601 UTC (``2026-12-06T16:50:11Z``); other values as text, or
    ``-`` when empty."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        moment = datetime.fromtimestamp(float(value), UTC)
        if milliseconds:
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value not in (None, "") else "-"
