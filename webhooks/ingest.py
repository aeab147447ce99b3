"""The ingest endpoints: ``POST /webhooks/coniq`` and ``POST /events``.

```
1 read raw body (size cap, chunked too), require JSON
                                          → 413 / 415
2 verify signature + timestamp            → 401
3 strict parse + validate                 → 400 (not strict JSON: NaN, 1e400, ...)
                                            / 422 (field errors, id mismatch)
4+5 one atomic inbox write (claim id, store event + units, append to the outbox)
                                          → 200 duplicate | 422 id-conflict | 503
6 202 {"status": "accepted", "id": ...}, Location: /fulfillments/{quoted id}
```

The edge never talks to the broker: once ``Inbox.accept`` returns, the event is durable
and the relay publishes its units from the outbox stream.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from typing import IO, Any

import redis
from flask import Blueprint, Response, g, request
from marshmallow import ValidationError

from webhooks.context import EdgeContext, edge_context
from webhooks.errors import ProblemError
from webhooks.jsonbody import (
    JSON_MIMETYPE,
    MAX_JSON_DEPTH,
    MalformedJson,
    malformed,
    parse_strict,
    string_keys,
)
from webhooks.paths import fulfillment_path
from webhooks.schemas import Event, load_event
from webhooks.units import canonical_json, fingerprint, units_for
from worker import metrics, observability
from worker.signing import SignatureError, verify
from worker.stores.inbox import InboxOutcome
from worker.stores.personal_data import hasher_for, subjects_of

__all__ = ["bp", "MAX_JSON_DEPTH", "RETRY_AFTER_SECONDS"]

log = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

# How long a sender should wait before retrying when the store is unavailable.
RETRY_AFTER_SECONDS = 5
SIGNATURE_HEADER_NAMES = ("webhook-id", "webhook-timestamp", "webhook-signature")
SOURCES = {"ingest.receive_coniq": "coniq", "ingest.receive_event": "internal"}
# A webhook-id worth logging with a refusal: printable ASCII without spaces, bounded.
_PRINTABLE_ID = re.compile(r"[\x21-\x7e]{1,200}")


@bp.post("/webhooks/coniq")
def receive_coniq() -> tuple[Response, int]:
    """Coniq loyalty webhooks, signed with a ``CONIQ_WEBHOOK_SECRETS`` secret."""
    ctx = edge_context()
    return _ingest(ctx, "coniq", ctx.settings.coniq_webhook_secrets)


@bp.post("/events")
def receive_event() -> tuple[Response, int]:
    """Internal reward events, signed with an ``EVENT_SECRETS`` secret."""
    ctx = edge_context()
    return _ingest(ctx, "internal", ctx.settings.event_secrets)


def _ingest(ctx: EdgeContext, source: str, secrets: Sequence[str]) -> tuple[Response, int]:
    settings = ctx.settings
    raw = _read_body(settings.max_body_bytes)
    try:
        meta = verify(
            raw, _signature_headers(), secrets, tolerance=settings.webhook_tolerance_seconds
        )
    except SignatureError as exc:
        raise ProblemError(401, exc.problem_type, exc.detail) from None
    document = _parse_json(raw)
    try:
        event = load_event(source, document)
    except ValidationError as exc:
        raise ProblemError(
            422,
            "validation-failed",
            "The event does not match the schema; see errors.",
            errors=string_keys(exc.messages),
        ) from None
    if event.id != meta.id:
        raise ProblemError(422, "id-mismatch", "webhook-id must equal the event's id.")
    with observability.event_context(event.id, source):
        return _store(ctx, source, event, document)


def _store(ctx: EdgeContext, source: str, event: Event, document: Any) -> tuple[Response, int]:
    """Steps 4-6 for a verified, valid event (inside its log and Sentry context)."""
    settings = ctx.settings
    units = units_for(source, event, ctx.rules)
    body = canonical_json(document)
    hasher = hasher_for(settings)  # who the event is about, as keyed hashes (for erasure)
    subjects = [hasher.digest(*found) for found in subjects_of(source, event.type, document)]
    try:
        outcome = ctx.inbox.accept(
            event_id=event.id,
            source=source,
            event_type=event.type,
            fingerprint=fingerprint(body),
            body=body,
            units=units,
            now=time.time(),
            stale_after=settings.unit_stale_seconds,
            subjects=subjects,
        )
    except redis.RedisError as exc:
        log.warning("inbox unavailable (%s); asked the sender to retry", type(exc).__name__)
        raise ProblemError(
            503,
            "store-unavailable",
            "The event store is unavailable or did not confirm the write. Retry later with the "
            "same webhook-id: an event that was stored is then answered as a duplicate.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    g.inbox_outcome = outcome
    log.info(
        "event %s source=%s type=%s units=%d outcome=%s",
        event.id,
        source,
        event.type,
        len(units),
        outcome.value,
    )
    if outcome is InboxOutcome.CONFLICT:
        raise ProblemError(
            422,
            "id-conflict",
            "This event id was already received with a different body or source.",
        )
    if outcome is InboxOutcome.DUPLICATE:
        return _answer("duplicate", event.id), 200
    # ACCEPTED, or PENDING: seen before but not yet published, so the sender's retry is
    # answered exactly like the first delivery.
    response = _answer("accepted", event.id)
    response.headers["Location"] = fulfillment_path(event.id)
    return response, 202


def _answer(status: str, event_id: str) -> Response:
    """``{"id": ..., "status": ...}``: a plain ``json.dumps``, at half the cost of jsonify
    (which consults the app's JSON provider on every call), on the edge's hottest path."""
    body = json.dumps({"id": event_id, "status": status})
    return Response(body, mimetype=JSON_MIMETYPE)


@bp.after_request
def _count(response: Response) -> Response:
    """Metrics for every ingest response, including refusals from the error handlers."""
    source = SOURCES.get(request.endpoint or "")
    if source is None:
        return response
    metrics.event_received(source)
    outcome = g.get("inbox_outcome")
    if response.status_code >= 400:
        reason = g.get("problem_type") or f"http-{response.status_code}"
        metrics.EVENTS_REJECTED.labels(source=source, reason=reason).inc()
        extra = {"source": source}
        claimed_id = request.headers.get("webhook-id", "")
        if _PRINTABLE_ID.fullmatch(claimed_id):  # unverified, so only a safe-looking one
            extra["event_id"] = claimed_id
        log.info("event refused: %s (%d)", reason, response.status_code, extra=extra)
    elif outcome is InboxOutcome.ACCEPTED:
        metrics.EVENTS_ACCEPTED.labels(source=source).inc()
    else:  # DUPLICATE, or PENDING (a redelivery answered 202 because not yet queued)
        metrics.EVENTS_DUPLICATE.labels(source=source).inc()
    return response


def _read_body(limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes, of a JSON request.

    Raises:
        ProblemError: 413 over the limit (declared or actual), 415 not JSON.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    if request.mimetype != JSON_MIMETYPE:
        raise ProblemError(415, "unsupported-media-type", f"Content-Type must be {JSON_MIMETYPE}.")
    # Read one byte past the limit so a body without (or with a lying) Content-Length is
    # still caught without buffering more than that.
    raw = _body_stream().read(limit + 1)
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def _body_stream() -> IO[bytes]:
    """The stream to read the body from, able to tell "too large" from "exactly the cap".

    For a chunked body (no Content-Length) werkzeug's ``request.stream`` stops at the
    app's MAX_CONTENT_LENGTH without saying whether more was sent, so an oversized body
    arrived truncated and failed its signature (401 instead of 413). A server that sets
    ``wsgi.input_terminated`` (gunicorn, werkzeug's) ends its input at the last chunk, so
    reading it directly, one byte past the cap, is safe and tells the two apart.
    """
    environ = request.environ
    if request.content_length is None and environ.get("wsgi.input_terminated"):
        stream: IO[bytes] = environ["wsgi.input"]
        return stream
    return request.stream


def _signature_headers() -> dict[str, str]:
    """The Standard Webhooks headers (werkzeug's Headers is not a ``Mapping``)."""
    return {
        name: value
        for name in SIGNATURE_HEADER_NAMES
        if (value := request.headers.get(name)) is not None
    }


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, "payload-too-large", f"The body must be at most {limit} bytes.")


def _parse_json(raw: bytes) -> Any:
    """Strict JSON (``jsonbody.parse_strict``): no infinities, no duplicate keys.

    Raises:
        ProblemError: 400 ``malformed-json``.
    """
    try:
        return parse_strict(raw)
    except MalformedJson as exc:
        raise malformed(exc) from None
