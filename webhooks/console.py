"""The dead-letter console: server-rendered pages under ``/admin`` for on-call operators.

    GET       /admin/sign-in                     the ADMIN_TOKEN form
    POST      /admin/sign-out
    GET       /admin/dead-letters                waiting letters; filters source, provider,
                                                 reason, age
    GET       /admin/dead-letters/{id}           one letter, its unit and attempt history
    GET|POST  /admin/dead-letters/{id}/replay    confirm, then replay under the same key
    GET|POST  /admin/dead-letters/{id}/discard   confirm, then discard (audit-logged)
    GET       /admin/events?event_id=...         an event's units (codes masked)

Sessions live in Redis: signing in stores a random session id (hashed) with a TTL, and
signing out deletes it, so a cookie copied before sign-out stops working at once. The
cookie itself is Flask's signed cookie, keyed by an HMAC of ``ADMIN_TOKEN`` (rotating the
token signs everyone out), holding that id, the CSRF token and flash messages, and
scoped to ``/admin``: Secure, HttpOnly, SameSite=Strict. Sign-in attempts are limited
per client address (``SIGN_IN_ATTEMPTS`` wrong tokens per ``SIGN_IN_WINDOW_SECONDS``,
a fixed window counted in Redis and shared with the admin API's bearer tokens:
:mod:`webhooks.token_guesses`), answered 429 with Retry-After beyond that. The
address is the peer's: behind a proxy, every client shares the proxy's, so a deployment
there must pass the client address through (e.g. werkzeug's ``ProxyFix``).
Browsers keep Secure cookies over https, and over plain http only for loopback hosts
(``http://127.0.0.1`` and ``http://localhost`` are secure contexts), so the console works
on a laptop and needs TLS (or a TLS-terminating proxy) anywhere else. Every form
(sign-in included) carries the session's CSRF token, checked on every POST; tokens are
compared in constant time. Redis down → a 503 page, never a 500. Like the admin
API, the console never shows a reward code in full, nor an event body (personal data),
and it never calls a provider: a replay puts the unit back on the ledger's schedule.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from werkzeug.routing import PathConverter

from webhooks import token_guesses
from webhooks.admin import (
    event_state,
    rules_fingerprint_now,
    rules_unchanged_message,
    unit_view,
)
from webhooks.context import edge_context
from webhooks.errors import ProblemError
from webhooks.paths import quote_id
from worker.config import Settings
from worker.stores.dead_letters import DeadLetter, DeadLetters, LetterStatus, ReplayResult
from worker.stores.inbox import Inbox
from worker.stores.ledger import Ledger
from worker.stores.refused import SOURCES as HOLDING_SOURCES
from worker.stores.refused import RefusedItems

__all__ = [
    "AGE_FILTERS",
    "CSRF_FIELD",
    "LIST_LIMIT",
    "SESSION_COOKIE_NAME",
    "SIGN_IN_ATTEMPTS",
    "SIGN_IN_WINDOW_SECONDS",
    "bp",
    "init_app",
    "session_secret",
]

log = logging.getLogger(__name__)
CONSOLE_PREFIX = "/admin"
bp = Blueprint(
    "console",
    __name__,
    url_prefix=CONSOLE_PREFIX,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

SESSION_COOKIE_NAME = "rr_console"
CSRF_FIELD = "csrf_token"
# A session ends after this long without a request, and this long after sign-in whatever.
SESSION_IDLE_SECONDS = 2 * 3600
SESSION_MAX_SECONDS = 12 * 3600
# Wrong tokens one client address may send per window before sign-in answers 429.
SIGN_IN_ATTEMPTS = token_guesses.GUESSES
SIGN_IN_WINDOW_SECONDS = token_guesses.WINDOW_SECONDS
LIST_LIMIT = 200  # letters shown on one page (the filters narrow it further)
SCAN_LIMIT = 5000  # waiting letters read to build one listing and its filter choices
DISCARD_REASON_MAX = 200  # characters kept in the audit log
ACTOR = "console"
# The age filter: a choice value → (newer or older, seconds).
AGE_FILTERS: dict[str, tuple[str, str, int]] = {
    "lt1h": ("newer", "less than 1 hour old", 3600),
    "lt24h": ("newer", "less than 24 hours old", 86400),
    "lt7d": ("newer", "less than 7 days old", 7 * 86400),
    "gt1h": ("older", "more than 1 hour old", 3600),
    "gt24h": ("older", "more than 24 hours old", 86400),
    "gt7d": ("older", "more than 7 days old", 7 * 86400),
}
KNOWN_SOURCES = ("coniq", "internal")
KNOWN_PROVIDERS = ("ifeelgoods", "rewardops")
_PUBLIC_ENDPOINTS = frozenset({"console.sign_in", "console.static"})
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def session_secret(admin_token: str) -> bytes:
    """The session-signing key: an HMAC of the admin token, never the token itself."""
    return hmac.new(
        admin_token.encode(), b"rewardrelay console session v1", hashlib.sha256
    ).digest()


class _ConsoleSessionInterface(SecureCookieSessionInterface):
    # Its own salt: a cookie signed for another purpose with the same key is not a session.
    salt = "rewardrelay-console"

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Only console pages have a session (the cookie's path is /admin, too).

        Everything else gets Flask's null session: building the cookie signer on every
        webhook would be wasted work on the hottest path.
        """
        if not request.path.startswith(CONSOLE_PREFIX):
            return None
        return super().open_session(app, request)


class LetterIdConverter(PathConverter):
    """A dead-letter id in a console URL: read like ``path`` (event ids may hold ``/``),
    written as one quoted segment (``webhooks.paths.quote_id``).

    ``path`` alone would write ``a/../b:0:0`` as it is, and the browser would resolve
    the dot-segments away: the link would open another letter (``/admin/b:0:0``, or a
    real letter's page for an id crafted to point at it). The quoted form is decoded
    back before routing, so the routes read the id either way.
    """

    def to_url(self, value: str) -> str:
        # ``:`` stays readable (ids end in ``:<line>:<index>``): it means nothing in a path
        # after the first segment, and an encoded one can only come from a ``:`` (a ``%``
        # of the id is itself encoded, as ``%25``).
        return quote_id(value).replace("%3A", ":")


def init_app(app: Flask, settings: Settings) -> None:
    """Register the console and configure the signed-cookie session it relies on."""
    app.url_map.converters["letter_id"] = LetterIdConverter
    app.secret_key = session_secret(settings.admin_token)
    app.session_interface = _ConsoleSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE_NAME,
        SESSION_COOKIE_PATH=CONSOLE_PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=SESSION_IDLE_SECONDS),
    )
    app.register_blueprint(bp)


# guards ---------------------------------------------------------------------------------


def _session_key(session_id: str) -> str:
    """Redis key of a session: the id's hash, so the store alone never yields a cookie."""
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    return f"{edge_context().keys.prefix}:console:session:{digest}"


def _start_session() -> None:
    """A fresh session (id, CSRF token) recorded in Redis: nothing from before survives."""
    session.clear()
    session.permanent = True
    session_id = secrets.token_urlsafe(32)
    edge_context().redis.set(_session_key(session_id), repr(time.time()), ex=SESSION_IDLE_SECONDS)
    session["sid"] = session_id
    _csrf_token()


def _signed_in() -> bool:
    """The cookie names a session Redis still holds, begun under SESSION_MAX_SECONDS ago.

    Each request extends the session's idle TTL, never past its maximum age.
    """
    session_id = session.get("sid")
    if not isinstance(session_id, str) or not session_id:
        return False
    key = _session_key(session_id)
    started = edge_context().redis.get(key)
    if started is None:
        return False
    age = time.time() - float(started)
    if age >= SESSION_MAX_SECONDS:
        return False
    edge_context().redis.expire(
        key, max(1, int(min(SESSION_IDLE_SECONDS, SESSION_MAX_SECONDS - age)))
    )
    return True


def _end_session() -> None:
    session_id = session.get("sid")
    if isinstance(session_id, str) and session_id:
        edge_context().redis.delete(_session_key(session_id))
    session.clear()


def _csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _csrf_valid() -> bool:
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not sent:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    if request.endpoint == "console.static":
        return None
    if request.endpoint not in _PUBLIC_ENDPOINTS:
        if not _signed_in():
            session.pop("sid", None)
            target = request.full_path if request.method == "GET" else ""
            return redirect(url_for("console.sign_in", next=target.rstrip("?") or None), 303)
        g.console_signed_in = True  # what the page header shows (the sign-out form)
    if request.method == "POST" and not _csrf_valid():
        return _page(
            "console/error.html",
            403,
            title="Form refused",
            message="This form's security token is missing or out of date. "
            "Go back, reload the page and try again.",
        )
    return None


@bp.errorhandler(redis.RedisError)
def _store_down(error: redis.RedisError) -> ResponseReturnValue:
    log.warning("console: Redis unavailable (%s)", type(error).__name__)
    return _page(
        "console/error.html",
        503,
        title="Store unavailable",
        message="The event store (Redis) did not answer. Nothing was changed; try again.",
    )


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.app_template_global("csrf_token")
def _template_csrf_token() -> str:
    return _csrf_token()


@bp.app_template_filter("utc")
def _utc(timestamp: float | int | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(float(timestamp), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("ago")
def _ago(timestamp: float | int | None) -> str:
    if not timestamp:
        return "-"
    seconds = max(0, int(time.time() - float(timestamp)))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(template, **context), status


def _stores() -> tuple[Inbox, Ledger, DeadLetters]:
    ctx = edge_context()
    return Inbox(ctx.redis, ctx.keys), Ledger(ctx.redis, ctx.keys), DeadLetters(ctx.redis, ctx.keys)


# sign in / out --------------------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    target = _safe_next(request.values.get("next", ""))
    if request.method == "GET":
        if _signed_in():
            return redirect(target, 303)
        return _page("console/sign_in.html", next=target)
    attempts_key = token_guesses.guesses_key()
    retry_after = token_guesses.count_guess(attempts_key)
    if retry_after:
        page, status = _page(
            "console/sign_in.html",
            429,
            next=target,
            error="Too many sign-in attempts from this address. "
            f"Try again in {_duration(retry_after)}.",
        )
        return page, status, {"Retry-After": str(retry_after)}
    expected = edge_context().settings.admin_token
    token = request.form.get("token", "").strip()
    if not expected or not token or not hmac.compare_digest(token.encode(), expected.encode()):
        return _page(
            "console/sign_in.html", 401, next=target, error="That token is not the admin token."
        )
    token_guesses.take_back_guess(attempts_key)
    _start_session()
    return redirect(target, 303)


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    _end_session()
    flash("Signed out.")
    return redirect(url_for("console.sign_in"), 303)


def _duration(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}" if seconds >= 60 else f"{seconds} s"


def _safe_next(value: str) -> str:
    """Only a path inside the console: never another host (no open redirect)."""
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. "//[" (an unterminated IPv6 host): not a console path
        return url_for("console.dead_letters")
    if (
        value.startswith("/admin/")
        and not parts.scheme
        and not parts.netloc
        and "\\" not in value
        and not value.startswith("//")
        and value.isprintable()
    ):
        return value
    return url_for("console.dead_letters")


# dead letters ---------------------------------------------------------------------------


@bp.get("/")
def home() -> ResponseReturnValue:
    return redirect(url_for("console.dead_letters"), 303)


@dataclass(frozen=True)
class Filters:
    source: str = ""
    provider: str = ""
    reason: str = ""
    age: str = ""

    @classmethod
    def from_args(cls, args: Any) -> Filters:
        age = args.get("age", "")
        return cls(
            source=args.get("source", "").strip(),
            provider=args.get("provider", "").strip(),
            reason=args.get("reason", "").strip(),
            age=age if age in AGE_FILTERS else "",
        )

    def matches(self, letter: DeadLetter, now: float) -> bool:
        if self.source and letter.source != self.source:
            return False
        if self.provider and letter.provider != self.provider:
            return False
        if self.reason and letter.reason != self.reason:
            return False
        if self.age:
            direction, _label, seconds = AGE_FILTERS[self.age]
            newer = letter.created_at >= now - seconds
            return newer if direction == "newer" else not newer
        return True

    @property
    def active(self) -> bool:
        return any((self.source, self.provider, self.reason, self.age))


def _choices(known: Iterable[str], seen: Iterable[str]) -> list[str]:
    return sorted({*known, *(value for value in seen if value)})


@bp.get("/dead-letters")
def dead_letters() -> ResponseReturnValue:
    _, _, letters = _stores()
    filters = Filters.from_args(request.args)
    now = time.time()
    waiting = list(letters.iter_waiting(limit=SCAN_LIMIT))
    matched = [letter for letter in waiting if filters.matches(letter, now)]
    return _page(
        "console/letters.html",
        letters=matched[:LIST_LIMIT],
        matched=len(matched),
        total=len(waiting),
        truncated=len(matched) > LIST_LIMIT,
        filters=filters,
        sources=_choices(KNOWN_SOURCES, (x.source for x in waiting)),
        providers=_choices(KNOWN_PROVIDERS, (x.provider for x in waiting)),
        reasons=_choices((), (x.reason for x in waiting)),
        ages=AGE_FILTERS,
    )


@bp.get("/dead-letters/<letter_id:letter_id>")
def dead_letter(letter_id: str) -> ResponseReturnValue:
    _, ledger, letters = _stores()
    letter = letters.get(letter_id)
    if letter is None:
        return _not_found(letter_id)
    unit = ledger.get(letter_id)
    return _page(
        "console/letter.html",
        letter=letter,
        waiting=letter.status is LetterStatus.WAITING,
        unit=unit_view(unit, ledger) if unit is not None else None,
        attempts=ledger.attempts(letter_id),
    )


@bp.route("/dead-letters/<letter_id:letter_id>/replay", methods=["GET", "POST"])
def replay(letter_id: str) -> ResponseReturnValue:
    _, _, letters = _stores()
    letter = letters.get(letter_id)
    if letter is None:
        return _not_found(letter_id)
    if request.method == "GET":
        return _page(
            "console/confirm.html",
            letter=letter,
            action="replay",
            rules_unchanged=_rules_unchanged(letter),
        )
    force = request.form.get("force") == "1"
    try:
        rules = "" if force else rules_fingerprint_now(edge_context().settings.rules_file)
    except ProblemError as problem:
        flash(f"Not replayed: {problem.detail}", "error")
        return redirect(url_for("console.dead_letter", letter_id=letter_id), 303)
    result = letters.replay(letter_id, now=time.time(), actor=ACTOR, rules_fingerprint=rules)
    if result is ReplayResult.RULES_UNCHANGED:
        flash(f"Not replayed: {rules_unchanged_message(letter_id)}", "error")
        return redirect(url_for("console.dead_letter", letter_id=letter_id), 303)
    if result is ReplayResult.REPLAYED:
        flash(f"Replayed {letter_id}: the unit is back on the schedule under the same key.")
        return redirect(url_for("console.event", event_id=letter.event_id), 303)
    flash(f"Not replayed: {letter_id} was already handled ({result.value}).", "error")
    return redirect(url_for("console.dead_letter", letter_id=letter_id), 303)


@bp.route("/dead-letters/<letter_id:letter_id>/discard", methods=["GET", "POST"])
def discard(letter_id: str) -> ResponseReturnValue:
    _, _, letters = _stores()
    letter = letters.get(letter_id)
    if letter is None:
        return _not_found(letter_id)
    if request.method == "GET":
        return _page("console/confirm.html", letter=letter, action="discard")
    reason = request.form.get("reason", "").strip()[:DISCARD_REASON_MAX]
    if letters.discard(letter_id, now=time.time(), actor=ACTOR, reason=reason):
        flash(f"Discarded {letter_id}.")
        return redirect(url_for("console.dead_letters"), 303)
    flash(f"Not discarded: {letter_id} was already handled.", "error")
    return redirect(url_for("console.dead_letter", letter_id=letter_id), 303)


def _rules_unchanged(letter: DeadLetter) -> bool:
    """An unroutable letter whose rules still decide as when it was written."""
    if not letter.rules_fingerprint:
        return False
    try:
        now = rules_fingerprint_now(edge_context().settings.rules_file)
    except ProblemError:
        return False
    return now == letter.rules_fingerprint


def _not_found(letter_id: str) -> tuple[str, int]:
    return _page(
        "console/error.html",
        404,
        title="No such dead letter",
        message=f"No dead letter has id {letter_id!r}.",
    )


# refused source items -------------------------------------------------------------------


def _refused_items() -> RefusedItems:
    ctx = edge_context()
    return RefusedItems(ctx.redis, ctx.keys)


@bp.get("/sources")
def refused_items() -> ResponseReturnValue:
    """What each reward source holds for an operator: ids, kind, reason and time only."""
    store = _refused_items()
    held = {source: store.held(source) for source in HOLDING_SOURCES}
    return _page("console/refused.html", held=held, total=sum(map(len, held.values())))


@bp.post("/sources/<source>/<path:item_id>/retry")
def retry_refused_item(source: str, item_id: str) -> ResponseReturnValue:
    if source not in HOLDING_SOURCES:
        return _no_source(source)
    moved = _refused_items().retry(source, item_id, now=time.time(), actor=ACTOR)
    if moved is None:
        flash(f"Not retried: {source} holds no refused item {item_id!r}.", "error")
    else:
        flash(f"Queued {item_id} for {source}'s next run.")
    return redirect(url_for("console.refused_items"), 303)


@bp.post("/sources/<source>/<path:item_id>/discard")
def discard_refused_item(source: str, item_id: str) -> ResponseReturnValue:
    if source not in HOLDING_SOURCES:
        return _no_source(source)
    reason = request.form.get("reason", "").strip()[:DISCARD_REASON_MAX]
    store = _refused_items()
    moved = store.discard(source, item_id, now=time.time(), actor=ACTOR, reason=reason)
    if moved is None:
        flash(f"Not discarded: {source} holds no refused item {item_id!r}.", "error")
    else:
        flash(f"Discarded {item_id} ({source}).")
    return redirect(url_for("console.refused_items"), 303)


def _no_source(source: str) -> tuple[str, int]:
    return _page(
        "console/error.html",
        404,
        title="No such source",
        message=f"No reward source is called {source!r}.",
    )


# event look-up --------------------------------------------------------------------------


@bp.get("/events")
def event() -> ResponseReturnValue:
    event_id = request.args.get("event_id", "").strip()
    if not event_id:
        return _page("console/event.html", event_id="", event=None, units=[], state="")
    inbox, ledger, _ = _stores()
    found = inbox.get(event_id)
    if found is None:
        return _page("console/event.html", 404, event_id=event_id, event=None, units=[], state="")
    units = ledger.get_many(found.unit_ids)
    return _page(
        "console/event.html",
        event_id=event_id,
        event=found,
        units=[unit_view(unit, ledger) for unit in units],
        state=event_state(units),
    )
