"""Admin API: the items the reward sources hold for operators, behind ``ADMIN_TOKEN``.

    GET    /sources/{source}/refused              held items: id, kind, reason, time only
    POST   /sources/{source}/refused/{id}/retry   back to the source's next run
    DELETE /sources/{source}/refused/{id}         discard (recorded in the audit log)

``source`` is ``ignico``, ``orders-platform`` or ``coniq-outbound``; the kinds and what a
retry does are in :mod:`worker.stores.refused`. Like a dead-letter replay, a retry only
puts the item back where its source's next beat run picks it up: the edge never calls a
source. A listing never shows the item's personal data (it stays at the source).
"""

from __future__ import annotations

import time

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import RAISE, Schema, fields, validate

from webhooks.admin import require_admin
from webhooks.context import edge_context
from webhooks.errors import ProblemError
from webhooks.jsonbody import read_admin_body
from webhooks.schemas import MAX_TEXT_CHARS
from worker.stores.refused import SOURCES, RefusedItems

__all__ = ["bp", "known_source"]

bp = Blueprint("refused_items", __name__)
ACTOR = "admin-api"


class DiscardSchema(Schema):
    """``DELETE /sources/{source}/refused/{id}``: an optional reason, kept in the audit log."""

    class Meta:
        unknown = RAISE

    reason = fields.String(validate=validate.Length(max=MAX_TEXT_CHARS))


_DISCARD = DiscardSchema()


def known_source(source: str) -> str:
    """``source`` when it holds items, else 404 ``source-not-found`` naming the sources."""
    if source not in SOURCES:
        raise ProblemError(
            404,
            "source-not-found",
            f"No reward source is called {source!r}; sources: {', '.join(SOURCES)}.",
        )
    return source


def _store() -> RefusedItems:
    ctx = edge_context()
    return RefusedItems(ctx.redis, ctx.keys)


def _not_held(source: str, item_id: str) -> ProblemError:
    return ProblemError(
        404, "refused-item-not-found", f"{source} holds no refused item {item_id!r}."
    )


@bp.get("/sources/<source>/refused")
@require_admin
def list_refused(source: str) -> ResponseReturnValue:
    items = [item.to_dict() for item in _store().held(known_source(source))]
    return jsonify(source=source, items=items, count=len(items))


@bp.post("/sources/<source>/refused/<path:item_id>/retry")
@require_admin
def retry_refused(source: str, item_id: str) -> ResponseReturnValue:
    moved = _store().retry(known_source(source), item_id, now=time.time(), actor=ACTOR)
    if moved is None:
        raise _not_held(source, item_id)
    return jsonify(source=source, id=item_id, kind=moved.kind.value, result="queued"), 202


@bp.delete("/sources/<source>/refused/<path:item_id>")
@require_admin
def discard_refused(source: str, item_id: str) -> ResponseReturnValue:
    reason: str = read_admin_body(_DISCARD, empty={}).get("reason", "")
    store = _store()
    moved = store.discard(
        known_source(source), item_id, now=time.time(), actor=ACTOR, reason=reason
    )
    if moved is None:
        raise _not_held(source, item_id)
    return jsonify(source=source, id=item_id, kind=moved.kind.value, status="discarded")
