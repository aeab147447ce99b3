"""``GET /openapi.json``: the hand-written OpenAPI 3.1 description of the HTTP API.

Extension point: other modules add their endpoints and schemas at import time, e.g.::

    from webhooks import openapi
    openapi.PATHS.update({"/dead-letters": {...}})
    openapi.SCHEMAS.update({"DeadLetter": {...}})
    openapi.SECURITY_SCHEMES.update({"adminToken": {"type": "http", "scheme": "bearer"}})

``document()`` assembles the current state on each request, so late additions appear.
``problem_response(...)`` and ``ref(...)`` help build entries in the same style.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from webhooks.errors import PROBLEM_BASE
from webhooks.schemas import CONIQ_TYPES, MAX_QUANTITY, MAX_UNITS_PER_EVENT

__all__ = [
    "PATHS",
    "SCHEMAS",
    "SECURITY_SCHEMES",
    "TAGS",
    "bp",
    "document",
    "json_response",
    "problem_response",
    "ref",
]

bp = Blueprint("openapi", __name__)
JsonObject = dict[str, Any]


def ref(schema: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{schema}"}


def problem_response(description: str, *types: str) -> JsonObject:
    """A response whose body is a Problem; ``types`` lists the possible ``type`` slugs."""
    text = description
    if types:
        text += " Problem types: " + ", ".join(f"`{t}`" for t in types) + "."
    return {
        "description": text,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }


def json_response(description: str, schema: JsonObject) -> JsonObject:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
_ID = {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 200}, {"type": "integer"}]}

SCHEMAS: dict[str, JsonObject] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri", "examples": [PROBLEM_BASE + "id-conflict"]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "object",
                "description": "validation-failed: field name → messages (nested for objects"
                " and list items); not-ready: check → status.",
            },
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["status", "id"],
        "properties": {"status": {"const": "accepted"}, "id": {"type": "string"}},
    },
    "Duplicate": {
        "type": "object",
        "required": ["status", "id"],
        "properties": {"status": {"const": "duplicate"}, "id": {"type": "string"}},
    },
    "Envelope": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "type", "created_at", "account_id", "data"],
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^[\\x21-\\x7e]{1,200}$",
                "description": "Must equal the webhook-id header.",
            },
            "type": {"type": "string", "examples": ["reward.issued", "reward.granted"]},
            "created_at": {"type": "string", "format": "date-time"},
            "account_id": _TEXT,
            "data": {"type": "object"},
        },
    },
    "ConiqRewardIssuedData": {
        "type": "object",
        "description": "Unknown fields are ignored (Coniq's format is unpublished).",
        "required": ["customer", "reward"],
        "properties": {
            "customer": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {
                    "id": _ID,
                    "email": {"type": "string", "format": "email"},
                    "first_name": {"type": ["string", "null"]},
                    "last_name": {"type": ["string", "null"]},
                },
            },
            "subscription": {
                "type": ["object", "null"],
                "required": ["id"],
                "properties": {"id": _ID, "program_id": _ID},
            },
            "reward": {
                "type": "object",
                "required": ["id", "offer_id"],
                "properties": {
                    "id": _ID,
                    "offer_id": {**_ID, "description": "Routing rules map it to a product."},
                    "name": {"type": ["string", "null"]},
                    "expiry_date": {
                        "type": ["string", "null"],
                        "description": "ISO 8601 date or date-time.",
                    },
                },
            },
        },
    },
    "ConiqEvent": {
        "allOf": [ref("Envelope")],
        "description": (
            "type is one of "
            + ", ".join(CONIQ_TYPES)
            + ", customer.*, subscription.*. reward.issued carries ConiqRewardIssuedData;"
            " the others any object (recorded, ignored unless a rule routes them)."
        ),
    },
    "RewardLine": {
        "type": "object",
        "additionalProperties": False,
        "description": "Either reward_code, or provider + product.",
        "oneOf": [{"required": ["reward_code"]}, {"required": ["provider", "product"]}],
        "properties": {
            "reward_code": _TEXT,
            "provider": {"enum": ["ifeelgoods", "rewardops"]},
            "product": {
                "type": "string",
                "pattern": "^[0-9]+/.+$",
                "description": "Ifeelgoods promotion_id/sku or RewardOps program_id/token.",
            },
            "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY, "default": 1},
        },
    },
    "RewardGrantedData": {
        "type": "object",
        "additionalProperties": False,
        "required": ["recipient", "rewards", "reference"],
        "properties": {
            "recipient": {
                "type": "object",
                "additionalProperties": False,
                "required": ["email", "first_name", "last_name"],
                "properties": {
                    "email": {"type": "string", "format": "email"},
                    "first_name": _TEXT,
                    "last_name": _TEXT,
                    "address": {"type": ["string", "object", "null"]},
                },
            },
            "rewards": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_UNITS_PER_EVENT,
                "items": ref("RewardLine"),
                "description": f"Sum of quantities at most {MAX_UNITS_PER_EVENT}.",
            },
            "reference": _TEXT,
        },
    },
    "InternalEvent": {
        "allOf": [ref("Envelope")],
        "description": "reward.granted carries RewardGrantedData; other types any object.",
    },
    "Readiness": {
        "type": "object",
        "properties": {"redis": {"const": "ok"}, "broker": {"const": "ok"}},
    },
}

SIGNATURE_HEADERS: list[JsonObject] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "Unique message id; equals the envelope id; the dedupe key.",
        "schema": {"type": "string"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Unix seconds; refused when outside the tolerance (default 300 s) "
        "in either direction.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Standard Webhooks v1: space-separated `v1,<base64 HMAC-SHA256>` of "
        "`{id}.{timestamp}.{raw body}` keyed by the base64 part of a `whsec_` secret. "
        "Any active secret may match (rotation); other versions are ignored.",
        "schema": {"type": "string"},
    },
]


def _ingest_operation(summary: str, schema: str, secrets_variable: str) -> JsonObject:
    return {
        "post": {
            "summary": summary,
            "tags": ["ingest"],
            "description": f"Signed with a secret from {secrets_variable}. A 2xx means the "
            "event is durably stored; redeliveries are safe.",
            "parameters": SIGNATURE_HEADERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref(schema)}},
            },
            "responses": {
                "202": json_response(
                    "Accepted (also for a redelivery whose units are not yet queued).",
                    ref("Accepted"),
                ),
                "200": json_response("Already accepted and queued.", ref("Duplicate")),
                "400": problem_response("The body is not JSON.", "malformed-json"),
                "401": problem_response(
                    "Not signed by an active secret.",
                    "signature-missing",
                    "signature-invalid",
                    "webhook-id-invalid",
                    "timestamp-invalid",
                    "timestamp-out-of-tolerance",
                ),
                "413": problem_response("Body over MAX_BODY_BYTES.", "payload-too-large"),
                "415": problem_response(
                    "Content-Type is not application/json.", "unsupported-media-type"
                ),
                "422": problem_response(
                    "Invalid event, or its id was used for another body.",
                    "validation-failed",
                    "id-mismatch",
                    "id-conflict",
                ),
                "503": problem_response(
                    "The store is down; nothing recorded; retry after Retry-After.",
                    "store-unavailable",
                ),
            },
        }
    }


PATHS: dict[str, JsonObject] = {
    "/webhooks/coniq": _ingest_operation(
        "Receive a Coniq webhook", "ConiqEvent", "CONIQ_WEBHOOK_SECRETS"
    ),
    "/events": _ingest_operation(
        "Receive an internal reward event", "InternalEvent", "EVENT_SECRETS"
    ),
    "/healthz": {
        "get": {
            "summary": "Liveness (no I/O)",
            "tags": ["operations"],
            "responses": {"200": json_response("Alive.", {"type": "object"})},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: Redis and the broker",
            "tags": ["operations"],
            "responses": {
                "200": json_response("Ready.", ref("Readiness")),
                "503": problem_response("Something is down (see errors).", "not-ready"),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "tags": ["operations"],
            "responses": {"200": json_response("OpenAPI 3.1.", {"type": "object"})},
        }
    },
}

SECURITY_SCHEMES: dict[str, JsonObject] = {}
TAGS: list[JsonObject] = [
    {"name": "ingest", "description": "Signed event intake (Standard Webhooks)."},
    {"name": "operations", "description": "Probes and API description."},
]


def document() -> JsonObject:
    """The OpenAPI document as it stands (including later ``PATHS`` additions)."""
    components: JsonObject = {"schemas": dict(SCHEMAS)}
    if SECURITY_SCHEMES:
        components["securitySchemes"] = dict(SECURITY_SCHEMES)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rewardrelay",
            "version": "0.1.0",
            "description": "Turns loyalty events into delivered rewards, exactly once.",
        },
        "tags": list(TAGS),
        "paths": dict(PATHS),
        "components": components,
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(document())
