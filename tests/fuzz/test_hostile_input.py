"""Hostile input that schema-driven fuzzing cannot produce, against the real app.

Schemathesis (test_openapi_fuzz.py) writes its bodies with a JSON serialiser, so it never
sends ``1e400``, ``NaN``, a 5000-digit integer or a raw NUL byte, and it sends each body
in the media type the document declares. The outside review found its 500s and silent
replays exactly there (issue 16 §2). Here the JSON *text* is generated (a valid event or
admin body with one value swapped for a raw token, or an odd whole document), and admin
bodies go out under other content types. Every answer must be a typed problem or a
success, never a 5xx; a non-finite number is always a 400; and a refused admin body
changes nothing in the store.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import TEST_ADMIN_TOKEN, TEST_CONIQ_SECRET, TEST_EVENT_SECRET
from tests.fuzz.conftest import LETTERS, budget
from tests.fuzz.strategies import (
    float_is_non_finite,
    hostile_json_text,
    is_non_finite,
    odd_number_tokens,
    valid_events,
)
from webhooks.errors import PROBLEM_BASE
from webhooks.paths import dead_letter_path
from worker.signing import signed_headers
from worker.stores.dead_letters import DeadLetters, LetterStatus

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
INGEST = {
    "coniq": ("/webhooks/coniq", TEST_CONIQ_SECRET),
    "internal": ("/events", TEST_EVENT_SECRET),
}
PROBLEM_JSON = "application/problem+json"


def assert_typed_problem(response: Any) -> str:
    """A refusal is problem+json with a stable type; returns the type's slug."""
    assert response.mimetype == PROBLEM_JSON, (response.status_code, response.text[:300])
    body = response.get_json(force=True)
    assert body["type"].startswith(PROBLEM_BASE) and body["status"] == response.status_code
    slug: str = body["type"][len(PROBLEM_BASE) :]
    return slug


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def letters(app: Flask) -> DeadLetters:
    ctx = app.extensions["rewardrelay"]
    return DeadLetters(ctx.redis, ctx.keys)


# --- signed events --------------------------------------------------------------------------


@budget(4)
@given(data=st.data())
def test_signed_events_in_json_text_no_serialiser_writes_never_get_a_5xx(client, data):
    # given a valid event of either source, as text with one value swapped for a raw token
    # (1e400, NaN, a huge integer, a NUL byte) or an odd whole document, correctly signed
    source, event = data.draw(valid_events(), label="event")
    raw, token = data.draw(hostile_json_text(event), label="text")
    path, secret = INGEST[source]
    headers = signed_headers(raw, secret, msg_id=event["id"])
    # when it is delivered
    response = client.post(path, data=raw, headers=headers)
    # then a typed answer, never a 5xx (a sender retries a 5xx forever)
    assert response.status_code in {200, 202, 400, 422}, response.text[:300]
    if response.status_code >= 400:
        slug = assert_typed_problem(response)
        if is_non_finite(token):
            # and a number that only fits as infinity is refused at parse time
            assert (response.status_code, slug) == (400, "malformed-json")


# --- admin bodies -----------------------------------------------------------------------------

# A body the bulk replay would accept; dry_run stays true unless the token replaces it (and
# then the body is invalid), so no example can replay for real.
bulk_bodies = st.fixed_dictionaries(
    {"dry_run": st.just(True)},
    optional={
        "source": st.sampled_from(["coniq", "internal"]),
        "provider": st.sampled_from(["ifeelgoods", "rewardops"]),
        "reason": st.sampled_from(["permanent", "retries-exhausted"]),
        "since": st.integers(0, 2**31),
        "limit": st.integers(1, 1000),
    },
)


@pytest.mark.usefixtures("known_ids")
@budget(3)
@given(data=st.data())
def test_bulk_replay_in_hostile_json_text_is_refused_or_a_dry_run(client, letters, data):
    # given waiting letters, and a bulk replay body as text with one value swapped
    raw, token = data.draw(hostile_json_text(data.draw(bulk_bodies, label="body")), label="text")
    waiting = letters.waiting_count()
    # when
    response = client.post(
        "/dead-letters/replay", data=raw, headers={**ADMIN, "Content-Type": "application/json"}
    )
    # then a typed answer, nothing replayed, and non-finite numbers refused at parse time
    assert response.status_code in {200, 400, 422}, response.text[:300]
    assert letters.waiting_count() == waiting
    if response.status_code == 200:
        assert response.get_json()["dry_run"] is True
    else:
        slug = assert_typed_problem(response)
        if is_non_finite(token):
            assert (response.status_code, slug) == (400, "malformed-json")


other_content_types = st.sampled_from(
    [
        None,
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "text/plain",
        "text/json",
        "application/x-json",
        "application/merge-patch+json",
        "application/jsonl",
        "application/octet-stream",
    ]
)
# Bodies a careless client sends: the valid "replay everything" body itself, forms, bytes.
careless_bodies = st.one_of(
    st.just(b"{}"),
    st.just(b'{"dry_run": false}'),
    st.sampled_from([b"dry_run=true", b"dryrun=1&source=coniq", b"reason=refunded"]),
    st.binary(min_size=1, max_size=64),
)


@pytest.mark.usefixtures("known_ids")
@budget(2)
@given(content_type=other_content_types, raw=careless_bodies)
def test_admin_bodies_in_another_content_type_get_415_and_change_nothing(
    client, letters, content_type, raw
):
    # given waiting letters, and bodies that are not declared as application/json
    headers = dict(ADMIN)
    if content_type is not None:
        headers["Content-Type"] = content_type
    waiting = letters.waiting_count()
    # when they are sent to the bulk replay and to a discard
    bulk = client.post("/dead-letters/replay", data=raw, headers=headers)
    discard = client.delete(dead_letter_path(LETTERS[0]), data=raw, headers=headers)
    # then both are refused as 415, and every letter still waits
    for response in (bulk, discard):
        assert response.status_code == 415, response.text[:300]
        assert assert_typed_problem(response) == "unsupported-media-type"
    assert letters.waiting_count() == waiting
    assert letters.get(LETTERS[0]).status is LetterStatus.WAITING


@budget(2)
@given(
    since=odd_number_tokens
    | st.sampled_from(["nan", "NAN", "inf", "-inf", "+Infinity", "infinity", "0x10", " 1 "])
)
def test_the_since_filter_takes_finite_numbers_only(client, since):
    # given / when the listing (query) and a dry-run bulk replay (body) get the value
    listing = client.get("/dead-letters", query_string={"since": since}, headers=ADMIN)
    bulk = client.post(
        "/dead-letters/replay", headers=ADMIN, json={"since": since, "dry_run": True}
    )
    # then a typed answer; a value that reads as NaN or an infinity is a 422 naming it
    for response in (listing, bulk):
        assert response.status_code in {200, 422}, response.text[:300]
        if float_is_non_finite(since.strip()):
            assert response.status_code == 422
            assert "since" in response.get_json()["errors"]
    assert json.loads(listing.text)  # the answer itself is strict JSON
