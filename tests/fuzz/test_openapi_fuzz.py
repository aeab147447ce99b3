"""Schemathesis against the app's own ``/openapi.json``, called in-process through WSGI.

The app is the real one (``create_app(settings)``, real Redis, the test's key prefix).
Every operation in the document is fuzzed with data that fits its schema and data that
does not; each response must not be a 5xx and must match what the document declares
(status code, content type, body schema). Admin operations run with the right token,
and again without one or with a wrong one. Ingest operations run as generated (unsigned,
so a 401 problem is the right answer) and again with the generated body signed, so the
validation behind the signature is fuzzed too.

Cases come from schemathesis' own strategies (``APIOperation.as_strategy``, positive and
negative generation) inside plain hypothesis tests parametrised per operation: the
``schemathesis.pytest`` plugin (``from_fixture(...).parametrize()``) fails under pytest 9
(``AttributeError: 'Function' object has no attribute '_nodeid'``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import TEST_ADMIN_TOKEN, TEST_CONIQ_SECRET, TEST_EVENT_SECRET
from tests.fuzz.conftest import KNOWN_EVENT, LETTERS, budget
from webhooks import openapi
from webhooks.errors import PROBLEM_BASE
from worker.signing import signed_headers

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
SECRETS = {"/webhooks/coniq": TEST_CONIQ_SECRET, "/events": TEST_EVENT_SECRET}
PROBLEM_JSON = "application/problem+json"


def assert_typed_problem(response: Any, *statuses: int) -> dict[str, Any]:
    """A refusal must be ``application/problem+json`` with a stable ``type`` and a detail."""
    assert response.headers.get("content-type", [""])[0].split(";")[0] == PROBLEM_JSON, (
        response.status_code,
        response.text[:500],
    )
    body = json.loads(response.content)
    assert isinstance(body.get("type"), str) and body["type"].startswith(PROBLEM_BASE), body
    assert body.get("status") == response.status_code, body
    assert body.get("detail"), body
    if statuses:
        assert response.status_code in statuses, body
    return body


def without_authorization(case: schemathesis.Case) -> None:
    """Drop the Authorization header schemathesis generated from the security scheme."""
    case.headers = CaseInsensitiveDict(
        {
            name: value
            for name, value in (case.headers or {}).items()
            if name.lower() != "authorization"
        }
    )


def maybe_known_ids(case: schemathesis.Case, data: st.DataObject) -> None:
    """Point some cases at ids that exist, so 200/202/409 answers are checked too."""
    params = case.path_parameters or {}
    if "event_id" in params and data.draw(st.booleans(), label="known event"):
        params["event_id"] = KNOWN_EVENT
    if "letter_id" in params and data.draw(st.booleans(), label="known letter"):
        params["letter_id"] = data.draw(st.sampled_from(LETTERS), label="letter")


# --- operations ------------------------------------------------------------------------


def _operations(*, tag: str | None = None) -> list[Any]:
    """(METHOD, path) of every operation in the document, as pytest params."""
    found = []
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":  # shared by the path's operations, not one of them
                continue
            if tag is None or tag in operation.get("tags", []):
                found.append(pytest.param(method.upper(), path, id=f"{method.upper()} {path}"))
    return found


OPERATIONS = _operations()
ADMIN_OPERATIONS = _operations(tag="admin")
INGEST_OPERATIONS = _operations(tag="ingest")
# The console's pages answer HTML, refusals included (a 403 page for a bad form); the
# schema checks hold them to the content types the document declares for them.
CONSOLE_OPERATIONS = {tuple(param.values) for param in _operations(tag="console")}


def cases(
    api_schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
) -> st.SearchStrategy:
    """Requests for one operation: fitting its schema, and (where it has inputs) not.

    ``headers`` are fixed, so negative generation leaves them alone (schemathesis drops a
    header it mutated away even when the caller passes it again).
    """
    operation = api_schema[path][method]
    raw = operation.definition.raw
    modes = [GenerationMode.POSITIVE]
    if raw.get("parameters") or raw.get("requestBody"):
        modes.append(GenerationMode.NEGATIVE)
    return st.sampled_from(modes).flatmap(
        lambda mode: operation.as_strategy(generation_mode=mode, headers=headers)
    )


def test_fuzzed_operations_are_exactly_those_the_app_serves(client_document, app):
    # given the document the app serves and the routes Flask knows
    served = {
        (method.upper(), path)
        for path, item in client_document["paths"].items()
        for method in item
        if method != "parameters"
    }
    routes = {
        (method, _openapi_path(rule.rule))
        for rule in app.url_map.iter_rules()
        # Static files (the app's and the console blueprint's CSS) are not API operations.
        if rule.endpoint.rpartition(".")[2] != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    # when / then: every route is documented, and this suite fuzzes every documented one
    assert routes <= served, routes - served
    assert served == {tuple(param.values) for param in OPERATIONS}


def _openapi_path(rule: str) -> str:
    """Flask's ``/a/<path:b>`` as OpenAPI's ``/a/{b}``."""
    parts = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].rpartition(":")[2] + "}"
        parts.append(part)
    return "/".join(parts)


@pytest.fixture
def client_document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


# --- every operation, with the admin token -----------------------------------------------


@pytest.mark.usefixtures("known_ids")
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
@budget(1)
@given(data=st.data())
def test_every_operation_never_5xx_and_answers_as_documented(api_schema, method, path, data):
    # given a generated request (fitting the schema or not); admin ones with the token,
    # the others with or without it (they must not care)
    case = data.draw(cases(api_schema, method, path), label="case")
    maybe_known_ids(case, data)
    without_authorization(case)
    admin = (method, path) in {tuple(param.values) for param in ADMIN_OPERATIONS}
    with_token = admin or data.draw(st.booleans(), label="admin token")
    # when it is sent to the app
    response = case.call(headers=ADMIN if with_token else {})
    # then no 5xx, and status, content type and body are what the document declares
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400 and (method, path) not in CONSOLE_OPERATIONS:
        assert_typed_problem(response)


# --- admin operations, without or with a wrong token ---------------------------------------

wrong_authorizations = st.one_of(
    st.none(),
    st.just(f"Bearer {TEST_ADMIN_TOKEN[:-1]}"),
    st.just(f"Bearer {TEST_ADMIN_TOKEN}x"),
    st.just(f"Basic {TEST_ADMIN_TOKEN}"),
    st.just(f"{TEST_ADMIN_TOKEN}"),
    st.just("Bearer"),
    # Stripped: an HTTP client refuses to send a value with leading whitespace (and a
    # server drops surrounding whitespace anyway), so such a draw tested the client.
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(
        "Bearer {}".format
    ),
).filter(lambda value: value is None or value.strip() != f"Bearer {TEST_ADMIN_TOKEN}")


@pytest.mark.usefixtures("known_ids")
@pytest.mark.parametrize(("method", "path"), ADMIN_OPERATIONS)
@budget(1)
@given(data=st.data(), authorization=wrong_authorizations)
def test_admin_operations_without_or_with_a_wrong_token_get_a_401_problem(
    api_schema, method, path, data, authorization, redis_client, key_prefix
):
    # given an admin request without a token, or with anything but the admin token, as
    # the address's first guess (the wrong-token limit has its own tests, in
    # tests/webhooks/test_admin_api.py; here every draw must reach the token check)
    for key in redis_client.scan_iter(match=f"{key_prefix}:admin-token:guesses:*"):
        redis_client.delete(key)
    case = data.draw(cases(api_schema, method, path), label="case")
    maybe_known_ids(case, data)
    without_authorization(case)
    headers = {} if authorization is None else {"Authorization": authorization}
    # when
    response = case.call(headers=headers)
    # then it is refused before anything else, as the documented 401 problem
    case.validate_response(response, checks=CHECKS)
    body = assert_typed_problem(response, 401, 404)
    if response.status_code == 404:
        # an id that routes nowhere (e.g. "/" makes the path end in "//"): the router's
        # generic 404 before any view runs, which says nothing about stored letters
        assert body["type"] == PROBLEM_BASE + "not-found", body
        return
    assert body["type"] == PROBLEM_BASE + "unauthorized"
    assert response.headers["www-authenticate"][0].startswith("Bearer ")


# --- ingest, signed -------------------------------------------------------------------------


# Placeholders for the signature headers, replaced once the body is known.
UNSIGNED = {"webhook-id": "unsigned", "webhook-timestamp": "0", "webhook-signature": "v1,"}


@pytest.mark.parametrize(("method", "path"), INGEST_OPERATIONS)
@budget(2)
@given(data=st.data())
def test_signed_ingest_requests_never_5xx_and_refusals_are_typed_problems(
    api_schema, method, path, data
):
    # given a generated ingest request whose body is signed with the endpoint's secret,
    # under the body's id when it has a usable one (else the id check refuses it: 422)
    case = data.draw(cases(api_schema, method, path, headers=UNSIGNED), label="case")
    raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    body_id = case.body.get("id") if isinstance(case.body, dict) else None
    usable_id = body_id if isinstance(body_id, str) and body_id.isascii() else None
    headers = signed_headers(raw, SECRETS[path], msg_id=usable_id)
    del headers["content-type"]  # the generated media type is sent, JSON or not
    case.headers = {**(case.headers or {}), **headers}
    # when it is sent as exactly the bytes that were signed
    response = case.call(data=raw)
    # then no 5xx, and it answers as documented: accepted, duplicate or a typed problem
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        body = assert_typed_problem(response, 400, 401, 413, 415, 422)
        if response.status_code == 401:
            # only an id the verifier cannot use; the signature itself always matches
            assert body["type"] == PROBLEM_BASE + "webhook-id-invalid", body
