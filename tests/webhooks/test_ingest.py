"""POST /webhooks/coniq and POST /events against a real Redis (db 14, own key prefix)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from rewardrelay.embedded import EmbeddedRedis
from webhooks import create_app
from worker.signing import signed_headers
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.outbox import Outbox

PROBLEM = "https://rewardrelay.dev/problems/"
NEW_SECRET = "whsec_" + base64.b64encode(b"the-new-internal-events-secret!!").decode()


def stored_keys(redis_client, key_prefix) -> list[bytes]:
    return sorted(redis_client.scan_iter(match=f"{key_prefix}:*", count=1000))


def outbox_units(redis_client, key_prefix) -> list[str]:
    return [fields[b"unit"].decode() for _, fields in redis_client.xrange(Keys(key_prefix).outbox)]


def assert_problem(response, status: int, problem_type: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"] == PROBLEM + problem_type
    assert body["status"] == status
    return body


# --- accepted ------------------------------------------------------------------------


def test_returns_202_and_stores_one_unit_for_coniq_reward_issued(
    client, signed_post, coniq_event, redis_client, key_prefix
):
    # given a signed Coniq reward.issued
    event = coniq_event()
    # when
    response = signed_post(client, "/webhooks/coniq", event)
    # then it is accepted, stored once and queued in the outbox
    assert response.status_code == 202
    assert response.get_json() == {"status": "accepted", "id": event["id"]}
    assert response.headers["Location"] == f"/fulfillments/{event['id']}"  # nothing to quote
    stored = Inbox(redis_client, Keys(key_prefix)).get(event["id"])
    assert stored is not None
    assert (stored.source, stored.type, stored.body) == ("coniq", "reward.issued", event)
    assert stored.unit_ids == (f"{event['id']}:0:0",)
    unit = redis_client.hgetall(Keys(key_prefix).unit(f"{event['id']}:0:0"))
    assert json.loads(unit[b"match"]) == {"offer_id": "1001", "reward_id": "rw_1"}
    assert outbox_units(redis_client, key_prefix) == [f"{event['id']}:0:0"]


def test_outbox_holds_exactly_one_entry_per_unit_for_multi_reward_event(
    client, signed_post, internal_event, redis_client, key_prefix
):
    # given an internal event with two lines: GIFT10 x3 and a RewardOps product x2
    event = internal_event()
    event["data"]["rewards"] = [
        {"reward_code": "GIFT10", "quantity": 3},
        {"provider": "rewardops", "product": "12/tok-gift-25", "quantity": 2},
    ]
    # when
    response = signed_post(client, "/events", event)
    # then one outbox entry and one pending unit hash per unit, keyed {id}:{line}:{index}
    assert response.status_code == 202
    expected = [f"{event['id']}:0:{i}" for i in range(3)] + [
        f"{event['id']}:1:{i}" for i in range(2)
    ]
    assert outbox_units(redis_client, key_prefix) == expected
    keys = Keys(key_prefix)
    for unit_id in expected:
        unit = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.unit(unit_id)).items()}
        assert unit["state"] == "pending"
        assert (unit["event_id"], unit["source"], unit["event_type"]) == (
            event["id"],
            "internal",
            "reward.granted",
        )
        line = unit_id.split(":")[1]
        assert json.loads(unit["match"]) == (
            {"reward_code": "GIFT10"}
            if line == "0"
            else {"product": "12/tok-gift-25", "provider": "rewardops"}
        )
    assert redis_client.zcard(keys.live) == len(expected)
    unit_keys = [k for k in stored_keys(redis_client, key_prefix) if b":unit:" in k]
    assert len(unit_keys) == len(expected)


def test_returns_202_then_200_for_event_with_nothing_to_fulfil(
    client, signed_post, coniq_event, redis_client, key_prefix
):
    # given a Coniq customer.created, which no rule routes
    event = coniq_event(type="customer.created", data={"customer_id": 1})
    # when it is delivered twice
    first = signed_post(client, "/webhooks/coniq", event)
    second = signed_post(client, "/webhooks/coniq", event)
    # then it is recorded with no units, and the redelivery is a duplicate
    assert (first.status_code, second.status_code) == (202, 200)
    assert outbox_units(redis_client, key_prefix) == []
    assert Inbox(redis_client, Keys(key_prefix)).get(event["id"]) is not None


# --- redelivery and conflicts ---------------------------------------------------------


def test_returns_202_for_redelivery_until_units_are_dispatched_then_200(
    client, signed_post, internal_event, redis_client, key_prefix
):
    # given an accepted event whose units the relay has not published yet
    event = internal_event()
    assert signed_post(client, "/events", event).status_code == 202
    # when the sender retries (keys reordered: the same event)
    reordered = dict(reversed(list(event.items())))
    retry = signed_post(client, "/events", reordered)
    # then it is answered "accepted" again, and nothing is queued twice
    assert retry.status_code == 202
    assert retry.get_json() == {"status": "accepted", "id": event["id"]}
    assert len(outbox_units(redis_client, key_prefix)) == 3
    # when the relay has published every unit
    outbox = Outbox(redis_client, Keys(key_prefix))
    for unit_id in outbox_units(redis_client, key_prefix):
        outbox.mark_dispatched([unit_id], time.time())
    again = signed_post(client, "/events", event)
    # then the redelivery is a duplicate
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "id": event["id"]}
    assert len(outbox_units(redis_client, key_prefix)) == 3


def test_returns_422_id_conflict_for_same_id_with_other_body(
    client, signed_post, internal_event, redis_client, key_prefix
):
    # given an accepted event
    event = internal_event()
    assert signed_post(client, "/events", event).status_code == 202
    # when the same id arrives with another body
    other = {**event, "account_id": "other-mall"}
    response = signed_post(client, "/events", other)
    # then it is refused and the stored event is unchanged
    assert_problem(response, 422, "id-conflict")
    stored = Inbox(redis_client, Keys(key_prefix)).get(event["id"])
    assert stored is not None and stored.body["account_id"] == "acme-mall"


def test_returns_422_id_conflict_for_same_id_from_other_source(
    client, signed_post, coniq_event, internal_event
):
    # given a Coniq event
    coniq = coniq_event(type="points.updated", data={"points": 5})
    assert signed_post(client, "/webhooks/coniq", coniq).status_code == 202
    # when an internal event reuses its id
    response = signed_post(client, "/events", internal_event(coniq["id"]))
    # then
    assert_problem(response, 422, "id-conflict")


# --- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "problem_type"),
    [
        pytest.param(
            {"secret": "whsec_" + base64.b64encode(b"w" * 24).decode()},
            "signature-invalid",
            id="wrong-secret",
        ),
        pytest.param({"timestamp_offset": -301}, "timestamp-out-of-tolerance", id="stale"),
        pytest.param({"timestamp_offset": +301}, "timestamp-out-of-tolerance", id="future"),
        pytest.param(
            {"headers": {"webhook-timestamp": "yesterday"}},
            "timestamp-invalid",
            id="non-numeric-timestamp",
        ),
        pytest.param(
            {"signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSy"}, "signature-invalid", id="truncated"
        ),
        pytest.param(
            {"headers": {"webhook-signature": None}}, "signature-missing", id="missing-signature"
        ),
        pytest.param({"headers": {"webhook-id": None}}, "signature-missing", id="missing-id"),
        pytest.param(
            {"headers": {"webhook-timestamp": None}}, "signature-missing", id="missing-timestamp"
        ),
    ],
)
def test_returns_401_for_bad_signature(
    client, signed_post, internal_event, redis_client, key_prefix, overrides, problem_type
):
    # given an otherwise valid event, with one thing wrong in its signature
    overrides = dict(overrides)
    if "timestamp_offset" in overrides:
        overrides["timestamp"] = int(time.time()) + overrides.pop("timestamp_offset")
    # when
    response = signed_post(client, "/events", internal_event(), **overrides)
    # then it is refused with a typed problem and nothing is stored
    assert_problem(response, 401, problem_type)
    assert stored_keys(redis_client, key_prefix) == []


def test_returns_401_before_looking_at_an_unsigned_body(client):
    # given garbage without any signature
    # when
    response = client.post("/events", data=b"{not json", content_type="application/json")
    # then the signature is checked first
    assert_problem(response, 401, "signature-missing")


def test_returns_401_for_coniq_event_signed_with_the_internal_secret(
    client, signed_post, coniq_event, settings
):
    # given a Coniq event signed with the other source's secret
    # when
    response = signed_post(
        client, "/webhooks/coniq", coniq_event(), secret=settings.event_secrets[0]
    )
    # then secrets are per source
    assert_problem(response, 401, "signature-invalid")


def test_returns_422_id_mismatch_when_header_and_envelope_ids_differ(
    client, signed_post, internal_event, redis_client, key_prefix
):
    # given a correctly signed request whose webhook-id is not the event id
    # when
    response = signed_post(client, "/events", internal_event(), msg_id="msg_other")
    # then
    assert_problem(response, 422, "id-mismatch")
    assert stored_keys(redis_client, key_prefix) == []


def test_accepts_either_rotating_secret_and_refuses_a_removed_one(
    settings, signed_post, internal_event
):
    # given the new and the old secret both active
    old = settings.event_secrets[0]
    rotating = create_app(replace(settings, event_secrets=(NEW_SECRET, old))).test_client()
    # when / then either one is accepted
    assert signed_post(rotating, "/events", internal_event(), secret=old).status_code == 202
    assert signed_post(rotating, "/events", internal_event(), secret=NEW_SECRET).status_code == 202
    # given the old secret was removed
    rotated = create_app(replace(settings, event_secrets=(NEW_SECRET,))).test_client()
    # when / then
    response = signed_post(rotated, "/events", internal_event(), secret=old)
    assert_problem(response, 401, "signature-invalid")


def test_returns_413_for_body_over_the_declared_limit(client, signed_post, settings):
    # given a body one byte over MAX_BODY_BYTES
    raw = b'{"pad": "' + b"x" * settings.max_body_bytes + b'"}'
    # when
    response = signed_post(client, "/events", raw)
    # then
    body = assert_problem(response, 413, "payload-too-large")
    assert str(settings.max_body_bytes) in body["detail"]


def test_returns_413_for_oversized_body_without_content_length(client, settings):
    # given a streamed (chunked) body with no Content-Length
    raw = b"[" + b"1," * settings.max_body_bytes + b"1]"
    # when
    response = client.post(
        "/events",
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    # then the read itself is capped
    assert_problem(response, 413, "payload-too-large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_returns_415_for_non_json_content_type(client, signed_post, internal_event, content_type):
    # given
    headers = {"Content-Type": None} if content_type is None else {}
    # when
    response = signed_post(
        client, "/events", internal_event(), content_type=content_type, headers=headers
    )
    # then
    assert_problem(response, 415, "unsupported-media-type")


def test_accepts_json_content_type_with_charset(client, signed_post, internal_event):
    # given / when
    response = signed_post(
        client, "/events", internal_event(), content_type="application/json; charset=utf-8"
    )
    # then
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b'{"id": ', "Expecting value", id="truncated"),
        pytest.param(b'\xff{"id": 1}', "utf-8", id="not-utf8"),
        pytest.param(b'{"id": "a", "id": "b"}', "duplicate object key", id="duplicate-key"),
        pytest.param(b'{"amount": NaN}', "NaN is not JSON", id="nan"),
        pytest.param(b'{"amount": -Infinity}', "-Infinity is not JSON", id="infinity"),
        pytest.param(b'{"amount": 1e400}', "out of range", id="float-overflow"),
        pytest.param(b'{"amount": -1e400}', "out of range", id="negative-overflow"),
        pytest.param(b'{"n": ' + b"9" * 5000 + b"}", "", id="int-over-digit-limit"),
        pytest.param(b"[" * 40 + b"]" * 40, "deeper than 32", id="too-deep"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "", id="absurdly-deep"),
    ],
)
def test_returns_400_for_malformed_json(client, signed_post, raw, reason):
    # given a correctly signed body that is not acceptable JSON
    # when
    response = signed_post(client, "/events", raw, msg_id="evt_1")
    # then
    body = assert_problem(response, 400, "malformed-json")
    assert reason in body["detail"]


def test_a_signed_event_carrying_1e400_is_refused_not_a_500(client, signed_post, coniq_event):
    # given a valid, signed event with a number that only fits as infinity, anywhere
    raw = json.dumps(coniq_event()).encode().replace(b'"offer_id": 1001', b'"offer_id": 1e400')
    assert b"1e400" in raw
    # when it is delivered (a sender retries a 5xx forever)
    response = signed_post(client, "/webhooks/coniq", raw)
    # then a typed 400 the sender stops on, and nothing stored
    body = assert_problem(response, 400, "malformed-json")
    assert "finite" in body["detail"]


def test_returns_422_with_field_errors(client, signed_post, internal_event):
    # given an event with a bad quantity, a missing reference and an unknown envelope field
    event = internal_event()
    event["data"]["rewards"][0]["quantity"] = 101
    del event["data"]["reference"]
    event["colour"] = "blue"
    # when
    response = signed_post(client, "/events", event)
    # then every failing field is named (list items by index)
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"] == {"colour": ["Unknown field."]}
    # when the envelope is fixed, the data errors show
    del event["colour"]
    body = assert_problem(signed_post(client, "/events", event), 422, "validation-failed")
    assert body["errors"] == {
        "data": {
            "reference": ["Missing data for required field."],
            "rewards": {
                "0": {
                    "quantity": [
                        "Must be greater than or equal to 1 and less than or equal to 100."
                    ]
                }
            },
        }
    }


def test_returns_422_for_unknown_coniq_type(client, signed_post, coniq_event):
    # given / when
    response = signed_post(client, "/webhooks/coniq", coniq_event(type="reward.revoked"))
    # then
    body = assert_problem(response, 422, "validation-failed")
    assert "type" in body["errors"]


@pytest.mark.parametrize("document", [[], "text", 3, None, {"id": "evt_1"}])
def test_returns_422_for_json_that_is_not_an_event(client, signed_post, document):
    # given / when
    response = signed_post(client, "/events", json.dumps(document).encode(), msg_id="evt_1")
    # then
    assert_problem(response, 422, "validation-failed")


def test_returns_problem_json_for_wrong_method_and_unknown_path(client):
    # given / when / then
    assert_problem(client.get("/events"), 405, "method-not-allowed")
    assert_problem(client.post("/nowhere"), 404, "not-found")


# --- store unavailable ---------------------------------------------------------------


def test_returns_503_with_retry_after_and_stores_nothing_when_redis_is_down(
    settings, signed_post, internal_event, redis_client, key_prefix
):
    # given an app whose Redis is a closed port (same key prefix as the real one)
    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/14")).test_client()
    # when
    response = signed_post(down, "/events", internal_event())
    # then the sender is told to retry, and nothing was written anywhere
    assert_problem(response, 503, "store-unavailable")
    assert response.headers["Retry-After"] == "5"
    assert stored_keys(redis_client, key_prefix) == []


def test_redis_stopped_mid_life_gets_503_and_a_restart_keeps_what_was_accepted(
    settings, signed_post, internal_event, tmp_path
):
    # given a receiver on its own real Redis server (append-only file on), one event accepted
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        app = create_app(replace(settings, redis_url=url))
        client = app.test_client()
        first, refused = internal_event(), internal_event()
        assert signed_post(client, "/events", first).status_code == 202

        # when the Redis server stops and another event arrives
        server.stop()
        response = signed_post(client, "/events", refused)

        # then the sender is told to retry later
        assert_problem(response, 503, "store-unavailable")
        assert response.headers["Retry-After"] == "5"

        # and after a restart from the same data, the accepted event is still there, the
        # refused one was never recorded, and its retry is accepted
        server.start()
        store = redis.Redis.from_url(url)
        inbox = Inbox(store, Keys(settings.key_prefix))
        assert inbox.get(first["id"]) is not None
        assert inbox.get(refused["id"]) is None
        assert signed_post(client, "/events", refused).status_code == 202
        assert signed_post(client, "/events", first).status_code in (200, 202)
        app.extensions["rewardrelay"].redis.close()
        store.close()
    finally:
        server.stop()


# --- through a real HTTP server ------------------------------------------------------


def test_accepts_a_signed_event_over_real_http(
    app, internal_event, settings, redis_client, key_prefix
):
    # given the app served by a real WSGI server on a free loopback port
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        event = internal_event()
        raw = json.dumps(event).encode()
        headers = signed_headers(raw, settings.event_secrets[0], event["id"])
        with httpx.Client(base_url=url, timeout=5) as http:
            # when the event is posted twice, and a tampered copy once
            first = http.post("/events", content=raw, headers=headers)
            second = http.post("/events", content=raw, headers=headers)
            tampered = http.post(
                "/events", content=raw.replace(b"GIFT10", b"GIFT99"), headers=headers
            )
            ready = http.get("/readyz")
    finally:
        server.shutdown()
        thread.join(timeout=5)
    # then
    assert first.status_code == 202 and first.json() == {"status": "accepted", "id": event["id"]}
    assert second.status_code == 202  # units not yet published by the relay
    assert tampered.status_code == 401
    assert tampered.headers["content-type"] == "application/problem+json"
    assert ready.json() == {"redis": "ok", "broker": "ok"}
    assert len(outbox_units(redis_client, key_prefix)) == 3


# --- never a 500 ---------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/events", "/webhooks/coniq"]),
    field=st.sampled_from(["id", "type", "created_at", "account_id", "data", "extra"]),
    value=_json,
)
def test_signed_random_input_never_gets_a_500(client, signed_post, path, field, value):
    # given a correctly signed event with one envelope field replaced by random JSON
    event = {
        "id": "evt_prop",
        "type": "reward.granted" if path == "/events" else "reward.issued",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme",
        "data": {},
        field: value,
    }
    # when
    response = signed_post(client, path, event, msg_id="evt_prop")
    # then the edge answers with a typed outcome, never an internal error
    assert response.status_code in {200, 202, 400, 422}, response.get_data(as_text=True)


# --- ids that need quoting, chunked bodies: through a real HTTP server -------------------------


@pytest.mark.parametrize("event_id", ["evt/a%2Fb?c=1#d", "evt%41", "evt?x", "evt#1", "..", "a//b/"])
def test_location_is_quoted_and_leads_to_the_event_over_real_http(
    live_url, settings, internal_event, event_id
):
    # given an event whose id holds characters a URL gives meaning to
    event = internal_event(event_id)
    raw = json.dumps(event).encode()
    headers = signed_headers(raw, settings.event_secrets[0], event_id)
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    with httpx.Client(base_url=live_url, timeout=5) as http:
        # when it is accepted, and its Location is followed by a real client
        accepted = http.post("/events", content=raw, headers=headers)
        location = accepted.headers["Location"]
        followed = http.get(location, headers=admin)
    # then the Location is one quoted segment and names exactly that event
    assert accepted.status_code == 202
    assert location.startswith("/fulfillments/") and "/" not in location[len("/fulfillments/") :]
    assert not {"?", "#"} & set(location)
    assert followed.status_code == 200, followed.text
    assert followed.json()["event_id"] == event_id


def _chunks(raw: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def test_chunked_body_over_the_limit_gets_413_not_401_over_real_http(live_url, settings):
    # given a correctly signed body one byte over MAX_BODY_BYTES, sent chunked (no length)
    limit = settings.max_body_bytes
    raw = b'{"pad": "' + b"x" * (limit - 10) + b'"}'
    assert len(raw) == limit + 1
    headers = signed_headers(raw, settings.event_secrets[0], "evt_chunked")
    with httpx.Client(base_url=live_url, timeout=10) as http:
        # when
        response = http.post("/events", content=_chunks(raw), headers=headers)
    # then it is refused for its size, before the signature is looked at
    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert response.status_code == 413, response.text
    assert response.json()["type"] == PROBLEM + "payload-too-large"


def test_chunked_body_of_exactly_the_limit_is_accepted_over_real_http(
    live_url, settings, internal_event, redis_client, key_prefix
):
    # given a signed, valid event padded with whitespace to exactly MAX_BODY_BYTES, chunked
    event = internal_event()
    compact = json.dumps(event).encode()
    raw = compact + b" " * (settings.max_body_bytes - len(compact))
    headers = signed_headers(raw, settings.event_secrets[0], event["id"])
    with httpx.Client(base_url=live_url, timeout=10) as http:
        # when
        response = http.post("/events", content=_chunks(raw), headers=headers)
    # then the whole body was read and verified
    assert response.status_code == 202, response.text
    assert len(outbox_units(redis_client, key_prefix)) == 3


def test_chunked_bodies_over_and_at_the_limit_under_gunicorn(
    gunicorn_url, settings, internal_event
):
    # given one chunked body a byte over MAX_BODY_BYTES and one exactly at it, both signed
    limit = settings.max_body_bytes
    over = b'{"pad": "' + b"x" * (limit - 10) + b'"}'
    event = internal_event()
    compact = json.dumps(event).encode()
    exact = compact + b" " * (limit - len(compact))
    with httpx.Client(base_url=gunicorn_url, timeout=10) as http:
        # when each is sent without a Content-Length
        refused = http.post(
            "/events",
            content=_chunks(over),
            headers=signed_headers(over, settings.event_secrets[0], "evt_over"),
        )
        accepted = http.post(
            "/events",
            content=_chunks(exact),
            headers=signed_headers(exact, settings.event_secrets[0], event["id"]),
        )
    # then the first is too large (not "badly signed"), the second read whole
    assert refused.status_code == 413, refused.text
    assert accepted.status_code == 202, accepted.text
