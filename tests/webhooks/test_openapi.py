"""The packaged OpenAPI document against the app it describes.

The description is data (``webhooks/openapi.json``), so nothing in the code keeps it in
step by construction: these tests do. Every route Flask serves is an operation of the
document and every operation is a route Flask serves; the limits it states are the
constants the code enforces.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from tasks.routing import PROVIDERS
from webhooks import admin, console, openapi, token_guesses
from webhooks.schemas import (
    CONIQ_TYPES,
    MAX_EMAIL_CHARS,
    MAX_QUANTITY,
    MAX_UNITS_PER_EVENT,
    SOURCES,
)
from worker.stores.models import UnitState

# Methods every route has without declaring them (answered by Flask itself).
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"  # shared by the path's operations, not one of them
    }


def served_operations(app: Flask) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every route but static files (CSS, not an API)."""
    return {
        (method, openapi_path(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.rpartition(".")[2] != "static"
        for method in (rule.methods or set()) - IMPLICIT_METHODS
    }


def openapi_path(rule: str) -> str:
    """Flask's ``/a/<path:b>`` as OpenAPI's ``/a/{b}``."""
    parts = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].rpartition(":")[2] + "}"
        parts.append(part)
    return "/".join(parts)


def test_the_document_describes_exactly_the_routes_flask_serves(app, client):
    # given the document the app serves, and the routes Flask dispatches
    document = client.get("/openapi.json").get_json()
    documented = documented_operations(document)
    served = served_operations(app)
    # then neither has an operation the other lacks
    assert served - documented == set(), "routes missing from webhooks/openapi.json"
    assert documented - served == set(), "operations in webhooks/openapi.json nothing serves"


def test_the_served_document_is_the_packaged_file_unchanged(client):
    # given / when
    response = client.get("/openapi.json")
    # then the bytes of the package's file, as JSON, and the same on every request
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == openapi.document_bytes()
    assert client.get("/openapi.json").get_data() == response.get_data()
    assert response.get_json() == openapi.document()


def test_document_copies_are_independent():
    # given a caller that changes its copy
    first = openapi.document()
    first["paths"].clear()
    # then the next caller still gets the whole document
    assert openapi.document()["paths"]


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = openapi.document()["components"]["schemas"][name]
    return schema


def test_the_limits_the_document_states_are_the_ones_the_code_enforces():
    document = openapi.document()
    rewards = _schema("RewardGrantedData")["properties"]["rewards"]
    assert rewards["maxItems"] == MAX_UNITS_PER_EVENT
    assert _schema("RewardLine")["properties"]["quantity"]["maximum"] == MAX_QUANTITY
    for coniq_type in CONIQ_TYPES:
        assert coniq_type in _schema("ConiqEvent")["description"]
    assert set(_schema("Unit")["properties"]["state"]["enum"]) == {s.value for s in UnitState}
    limit = next(
        p for p in document["paths"]["/dead-letters"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["maximum"] == admin.BULK_REPLAY_MAX
    age = next(
        p
        for p in document["paths"]["/admin/dead-letters"]["get"]["parameters"]
        if p["name"] == "age"
    )
    assert all(choice in age["schema"]["description"] for choice in console.AGE_FILTERS)
    assert document["components"]["securitySchemes"]["consoleSession"]["name"] == (
        console.SESSION_COOKIE_NAME
    )
    for schema, person in (
        ("ConiqRewardIssuedData", "customer"),
        ("RewardGrantedData", "recipient"),
    ):
        email = _schema(schema)["properties"][person]["properties"]["email"]
        assert email["maxLength"] == MAX_EMAIL_CHARS
    bulk = document["paths"]["/dead-letters/replay"]["post"]
    body = bulk["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert set(body["properties"]) == set(admin.BulkReplaySchema().fields)
    assert body["properties"]["source"]["oneOf"][0]["enum"] == list(SOURCES)
    assert body["properties"]["provider"]["oneOf"][0]["enum"] == list(PROVIDERS)
    assert body["properties"]["limit"]["oneOf"][0]["maximum"] == admin.BULK_REPLAY_MAX
    sign_in = document["paths"]["/admin/sign-in"]["post"]
    assert f"{console.SIGN_IN_ATTEMPTS} wrong tokens" in sign_in["description"]
    assert f"{console.SIGN_IN_WINDOW_SECONDS // 60}-minute" in sign_in["description"]


def test_every_refusal_the_admin_bodies_make_is_documented():
    # the statuses tests/webhooks/test_admin_api.py provokes from each body-reading operation
    paths = openapi.document()["paths"]
    bulk = paths["/dead-letters/replay"]["post"]["responses"]
    discard = paths["/dead-letters/{letter_id}"]["delete"]["responses"]
    assert {"400", "401", "413", "415", "422"} <= set(bulk)
    assert {"400", "401", "404", "409", "413", "415", "422"} <= set(discard)
    assert "body-required" in bulk["400"]["description"]
    assert "invalid-filter" in paths["/dead-letters"]["get"]["responses"]["422"]["description"]
    assert "429" in paths["/admin/sign-in"]["post"]["responses"]


def test_every_admin_token_operation_documents_the_wrong_token_limit():
    document = openapi.document()
    guarded = [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and operation.get("security") == [{"adminToken": []}]
    ]
    assert guarded
    for path, method, operation in guarded:
        limited = operation["responses"].get("429")
        assert limited is not None, (method, path)
        assert "Retry-After" in limited["headers"]
        assert "too-many-token-guesses" in limited["description"]
        assert (
            f"{token_guesses.GUESSES} per {token_guesses.WINDOW_SECONDS // 60}-minute"
            in (limited["description"])
        )
    scheme = document["components"]["securitySchemes"]["adminToken"]["description"]
    assert f"{token_guesses.GUESSES} wrong tokens per" in scheme
