"""The console's provider lanes page: each lane's state, and pause/resume behind a
confirmation, for on-call operators.

    GET       /admin/lanes                      every provider lane
    GET|POST  /admin/lanes/{provider}/pause     confirm (with a reason), then pause
    GET|POST  /admin/lanes/{provider}/resume    confirm, then resume

Same session, CSRF check and security headers as the dead-letter console
(webhooks/console.py): a page needs the console's sign-in, every POST the session's CSRF
token. Each pause and resume is written to the lanes' audit log as done by ``console``
with the operator's reason.
"""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from tasks.routing import PROVIDERS
from webhooks import console
from webhooks.context import edge_context
from webhooks.lanes_api import REASON_MAX, lane_views, pause, resume
from worker.stores.lanes import LaneStore

__all__ = ["bp"]

bp = Blueprint("console_lanes", __name__, url_prefix=f"{console.CONSOLE_PREFIX}/lanes")
ACTOR = "console"
ACTIONS = ("pause", "resume")


def _store() -> LaneStore:
    ctx = edge_context()
    return LaneStore(ctx.redis, ctx.keys)


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    """The console's rules: signed in for every page, the CSRF token on every POST."""
    if not console._signed_in():
        session.pop("admin", None)
        target = request.full_path if request.method == "GET" else ""
        return redirect(url_for("console.sign_in", next=target.rstrip("?") or None), 303)
    if request.method == "POST" and not console._csrf_valid():
        return console._page(
            "console/error.html",
            403,
            title="Form refused",
            message="This form's security token is missing or out of date. "
            "Go back, reload the page and try again.",
        )
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in console._SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.get("")
def lanes() -> ResponseReturnValue:
    return console._page("console/lanes.html", lanes=lane_views(_store()))


@bp.route("/<provider>/<action>", methods=["GET", "POST"])
def change(provider: str, action: str) -> ResponseReturnValue:
    if provider not in PROVIDERS or action not in ACTIONS:
        return console._page(
            "console/error.html",
            404,
            title="No such lane",
            message=f"No provider lane {provider!r} with action {action!r}.",
        )
    store = _store()
    if request.method == "GET":
        return console._page(
            "console/lane_confirm.html",
            lane=store.view(provider),
            action=action,
            reason_max=REASON_MAX,
        )
    reason = request.form.get("reason", "").strip()[:REASON_MAX]
    if action == "pause":
        view = pause(store, provider, reason=reason, by=ACTOR)
        flash(f"Paused {provider}: its units wait, no provider call until resumed.")
    else:
        view = resume(store, provider, reason=reason, by=ACTOR)
        flash(f"Resumed {provider}: {view.waiting} units still waiting are released in order.")
    return redirect(url_for("console_lanes.lanes"), 303)
