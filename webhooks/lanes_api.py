"""Admin API: provider lanes, behind ``ADMIN_TOKEN``.

    GET  /lanes                        every provider's lane: state, reason, since, waiting
    POST /lanes/{provider}/pause       hold a provider (body: optional reason, by)
    POST /lanes/{provider}/resume      open it again; waiting units are released oldest first

Every pause and resume is written to the lanes' audit log with who and why. The edge
never calls a provider: a resume only releases waiting units onto the ledger's schedule,
at the lane's rate, and the scheduler publishes them.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import RAISE, Schema, fields, validate

from tasks.lanes import release_waiting
from tasks.routing import PROVIDERS
from webhooks.admin import require_admin
from webhooks.errors import ProblemError
from webhooks.jsonbody import read_admin_body
from worker import metrics
from worker.stores.lanes import LaneStore, LaneView

__all__ = ["bp", "lane_views", "pause", "resume", "LaneActionSchema", "REASON_MAX", "BY_MAX"]

bp = Blueprint("lanes", __name__)
REASON_MAX = 200  # characters of an operator's reason kept in the audit log
BY_MAX = 100


def _store() -> LaneStore:
    ctx = current_app.extensions["rewardrelay"]
    return LaneStore(ctx.redis, ctx.keys)


def lane_views(store: LaneStore) -> list[LaneView]:
    """Every provider's lane (an untouched lane reads as open, nothing waiting)."""
    names = sorted(set(PROVIDERS) | set(store.names()))
    now = time.time()
    return [store.view(name, now=now) for name in names]


def _known(provider: str) -> str:
    if provider not in PROVIDERS:
        raise ProblemError(
            404, "lane-not-found", f"No provider lane {provider!r}; known: {', '.join(PROVIDERS)}."
        )
    return provider


class LaneActionSchema(Schema):
    """``POST /lanes/{provider}/pause|resume``: an optional reason and who, for the audit log."""

    class Meta:
        unknown = RAISE

    reason = fields.String(validate=validate.Length(max=REASON_MAX))
    by = fields.String(validate=validate.Length(max=BY_MAX))


_ACTION = LaneActionSchema()


def _body() -> tuple[str, str]:
    """``reason`` and ``by`` from the optional JSON body (400/415/422 problems when bad)."""
    body = read_admin_body(_ACTION, empty={})
    return str(body.get("reason", "")).strip(), str(body.get("by", "")).strip()


def pause(store: LaneStore, provider: str, *, reason: str, by: str) -> LaneView:
    """Hold a provider: its units wait, no call is made, until someone resumes it."""
    store.set_state(provider, "paused", reason=reason or "operator", by=by, action="pause")
    metrics.lane_transition(provider, "paused")
    current_app.logger.warning(
        "lane %s paused by %s: %s", provider, by, reason or "operator", extra={"lane": provider}
    )
    return store.view(provider)


def resume(store: LaneStore, provider: str, *, reason: str, by: str) -> LaneView:
    """Open a lane (whatever closed it) and release its oldest waiting units."""
    store.set_state(provider, "open", reason=reason, by=by, action="resume")
    metrics.lane_transition(provider, "resumed")
    current_app.logger.warning("lane %s resumed by %s", provider, by, extra={"lane": provider})
    release_waiting(store, current_app.extensions["rewardrelay"].settings, provider)
    return store.view(provider)


@bp.get("/lanes")
@require_admin
def list_lanes() -> ResponseReturnValue:
    return jsonify(items=[view.to_dict() for view in lane_views(_store())])


@bp.post("/lanes/<provider>/pause")
@require_admin
def pause_lane(provider: str) -> ResponseReturnValue:
    _known(provider)
    reason, by = _body()
    return jsonify(pause(_store(), provider, reason=reason, by=by or "admin-api").to_dict())


@bp.post("/lanes/<provider>/resume")
@require_admin
def resume_lane(provider: str) -> ResponseReturnValue:
    _known(provider)
    reason, by = _body()
    return jsonify(resume(_store(), provider, reason=reason, by=by or "admin-api").to_dict())
