"""Redis URLs: the one parser of the ``redis+sentinel://`` form (no Redis import here).

    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?sentinel_password=P]

Settings validate ``REDIS_URL`` and ``CELERY_BROKER_URL`` with it at start-up, the client
factory (``worker.redis_connect``) builds from it, and ``broker_connection`` turns it into
kombu's ``sentinel://`` form. Kept free of redis-py so a light command (``send``) that
reads the settings does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

__all__ = [
    "SENTINEL_SCHEME",
    "SENTINEL_SOCKET_TIMEOUT_SECONDS",
    "SentinelURL",
    "broker_connection",
    "is_sentinel_url",
    "parse_sentinel_url",
]

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# How long one question to a sentinel may take: a dead sentinel is skipped, not waited on.
SENTINEL_SOCKET_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split a Sentinel URL into its parts.

    Raises:
        ValueError: the URL is not of the documented form (the message says what is wrong).
    """
    scheme, sep, rest = url.partition("://")
    if scheme != SENTINEL_SCHEME or not sep:
        raise ValueError(f"must start with {SENTINEL_SCHEME}://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        credentials, _, netloc = netloc.rpartition("@")
        username, password = _credentials(credentials)
    sentinels = tuple(_host_port(part) for part in netloc.split(",") if part)
    if not sentinels:
        raise ValueError("must name at least one sentinel host:port")
    segments = [s for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("must end in /SERVICE or /SERVICE/DB (the monitored master's name)")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"database must be a number, got {segments[1]!r}")
        db = int(segments[1])
    options = parse_qs(query)
    unknown = set(options) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} (only sentinel_password)")
    sentinel_password = options.get("sentinel_password", [None])[0]
    return SentinelURL(
        sentinels=sentinels,
        service=unquote(segments[0]),
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )


def _credentials(text: str) -> tuple[str | None, str | None]:
    """(user, password) from ``USER:PASSWORD``, ``:PASSWORD`` or ``PASSWORD``."""
    user, has_password, secret = text.partition(":")
    if not has_password:
        return None, unquote(user) or None
    return unquote(user) or None, unquote(secret) or None


def _host_port(part: str) -> tuple[str, int]:
    host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"sentinel {part!r} has no host")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"sentinel {part!r} has no valid port")
    return host, int(port)


def broker_connection(url: str) -> tuple[str, dict[str, Any]]:
    """The Celery broker URL and the transport options it needs.

    A Sentinel URL becomes kombu's ``sentinel://`` list (one entry per sentinel, each with
    the credentials and database) plus ``master_name`` and ``sentinel_kwargs``; any other
    URL is returned as it is with no options.
    """
    if not is_sentinel_url(url):
        return url, {}
    parts = parse_sentinel_url(url)
    credentials = ""
    if parts.password is not None:
        credentials = f"{quote(parts.username or '', safe='')}:{quote(parts.password, safe='')}@"
    kombu_url = ";".join(
        f"sentinel://{credentials}{host}:{port}/{parts.db}" for host, port in parts.sentinels
    )
    options: dict[str, Any] = {"master_name": parts.service}
    sentinel_options: dict[str, Any] = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_SECONDS}
    if parts.sentinel_password:
        sentinel_options["password"] = parts.sentinel_password
    options["sentinel_kwargs"] = sentinel_options
    return kombu_url, options
