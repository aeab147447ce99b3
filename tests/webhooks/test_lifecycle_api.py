"""The edge's side of the data lifecycle: events accepted through the real ingest path
(signed, validated, indexed by keyed hash), then ``POST /erasures`` and
``GET /fulfillments/{id}`` after retention, on the app built by ``create_app``.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.lifecycle_checks import traces_of
from webhooks.erasures import ErasureSchema
from webhooks.schemas import MAX_EMAIL_CHARS, MAX_TEXT_CHARS
from worker.stores.inbox import Inbox
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitState
from worker.stores.outbox import Outbox
from worker.stores.retention import Retention, RetentionPolicy

PROBLEM = "https://rewardrelay.dev/problems/"
ADDRESS = "ada@example.com"  # the address of the sample Coniq event


@pytest.fixture
def admin(settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


@pytest.fixture
def stores(app):
    ctx = app.extensions["rewardrelay"]
    return ctx.redis, ctx.keys, Inbox(ctx.redis, ctx.keys), Ledger(ctx.redis, ctx.keys)


def deliver(client, signed_post, event) -> int:
    return signed_post(client, "/webhooks/coniq", event).status_code


def fulfil(stores, unit_id: str) -> None:
    """What a worker does for the unit: published (relay), then begun and fulfilled."""
    redis_client, keys, _, ledger = stores
    now = time.time()
    Outbox(redis_client, keys).mark_dispatched([unit_id], now)
    begun = ledger.begin(unit_id, now=now, lease_seconds=60.0)
    record = AttemptRecord(
        attempt=begun.attempt, at=now, mode=begun.decision, outcome=AttemptOutcome.FULFILLED
    )
    assert ledger.finish(
        unit_id,
        begun.attempt,
        UnitState.FULFILLED,
        record,
        now=now,
        next_check_at=None,
        fields={"provider_ref": "ifg-77", "codes": '["CODE-1234-5678"]'},
    )


def test_erasure_refuses_with_409_while_a_unit_is_in_flight_then_erases(
    client, signed_post, coniq_event, stores, admin, caplog
):
    # given an accepted Coniq reward whose unit is still pending
    redis_client, keys, _, _ = stores
    event = coniq_event()
    assert deliver(client, signed_post, event) == 202
    caplog.set_level(logging.DEBUG)
    # when its customer's erasure is asked for
    refused = client.post("/erasures", json={"email": ADDRESS}, headers=admin)
    # then 409 names the unit, and the data is still there
    assert refused.status_code == 409
    assert refused.json["type"] == PROBLEM + "units-in-flight"
    assert refused.json["errors"]["units"] == {f"{event['id']}:0:0": "pending"}
    assert traces_of(redis_client, keys.prefix, ADDRESS)
    # when the unit is fulfilled and the erasure asked again (by Coniq customer id)
    fulfil(stores, f"{event['id']}:0:0")
    done = client.post("/erasures", json={"customer_id": 4711}, headers=admin)
    # then it answers the counts, and the address is nowhere: Redis, answers, logs
    assert done.status_code == 200
    assert done.json["events"] == 1 and done.json["kind"] == "customer_id"
    assert traces_of(redis_client, keys.prefix, ADDRESS) == []
    assert ADDRESS not in done.get_data(as_text=True)
    assert ADDRESS not in caplog.text and "4711" not in caplog.text
    # and the fulfilment view keeps the unit's state and provider reference
    view = client.get(f"/fulfillments/{event['id']}", headers=admin).json
    assert view["units"][0]["state"] == "fulfilled"
    assert view["units"][0]["provider_ref"] == "ifg-77"
    # and a redelivery of the event is still a duplicate
    assert deliver(client, signed_post, event) == 200
    assert traces_of(redis_client, keys.prefix, ADDRESS) == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "email"),
        ({"email": ADDRESS, "customer_id": "1"}, 422, "email"),
        ({"email": "not-an-address"}, 422, "email"),
        ({"email": ""}, 422, "email"),
        ({"email": "a@" + "b" * 300 + ".com"}, 422, "email"),
        ({"customer_id": True}, 422, "customer_id"),
        ({"customer_id": " "}, 422, "customer_id"),
        ({"phone": "123"}, 422, "phone"),
        (["email"], 422, "body"),
    ],
)
def test_a_bad_erasure_request_is_a_typed_problem(client, admin, body, status, field):
    # when
    response = client.post("/erasures", json=body, headers=admin)
    # then
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert field in response.json["errors"]
    assert ADDRESS not in response.get_data(as_text=True)  # refusals never echo it


def test_an_erasure_without_a_json_body_is_refused_like_any_admin_body(client, admin):
    assert client.post("/erasures", headers=admin).status_code == 400
    form = client.post("/erasures", data={"email": ADDRESS}, headers=admin)
    assert form.status_code == 415


def test_erasure_needs_the_admin_token(client):
    assert client.post("/erasures", json={"email": ADDRESS}).status_code == 401


def test_erasure_is_in_the_api_description(client):
    paths = client.get("/openapi.json").json["paths"]
    erasure = paths["/erasures"]["post"]
    assert set(erasure["responses"]) >= {"200", "400", "401", "409", "415", "422"}
    assert "410" in paths["/fulfillments/{event_id}"]["get"]["responses"]
    # and the limits it states are the ones the schema enforces
    body = erasure["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == set(ErasureSchema().fields)
    assert body["properties"]["email"]["maxLength"] == MAX_EMAIL_CHARS
    assert body["properties"]["customer_id"]["oneOf"][0]["maxLength"] == MAX_TEXT_CHARS


def test_an_expired_event_answers_410_and_its_redelivery_is_a_duplicate(
    client, signed_post, coniq_event, stores, admin
):
    # given a fulfilled event closed under a one-second retention
    redis_client, keys, _, _ = stores
    event = coniq_event()
    assert deliver(client, signed_post, event) == 202
    fulfil(stores, f"{event['id']}:0:0")
    retention = Retention(redis_client, keys, RetentionPolicy(1, 60))
    assert retention.close_waiting(now=time.time()) == {"fulfilled": 1}
    # when the retention period passes
    deadline = time.monotonic() + 5
    while redis_client.exists(keys.event(event["id"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    # then its fulfilment view says it expired (410 problem), an unknown id stays 404
    gone = client.get(f"/fulfillments/{event['id']}", headers=admin)
    assert gone.status_code == 410 and gone.json["type"] == PROBLEM + "event-expired"
    assert client.get("/fulfillments/evt_never", headers=admin).status_code == 404
    # and a redelivery is a duplicate, the same id with another body a conflict
    assert deliver(client, signed_post, event) == 200
    changed = {**event, "account_id": "another-mall"}
    assert deliver(client, signed_post, changed) == 422
    assert redis_client.exists(keys.event(event["id"])) == 0
