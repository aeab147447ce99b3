"""The app factory, the probes and the OpenAPI document."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from webhooks import create_app
from webhooks.context import EdgeContext
from worker.config import SettingsError

PROBLEM = "https://rewardrelay.dev/problems/"


def test_create_app_exposes_the_edge_context(app, settings):
    # given / when
    ctx = app.extensions["rewardrelay"]
    # then the admin API and the probes find what they need
    assert isinstance(ctx, EdgeContext)
    assert ctx.settings is settings
    assert ctx.keys.prefix == settings.key_prefix
    assert ctx.redis.ping() is True
    with app.test_request_context():
        from webhooks import edge_context

        assert edge_context() is ctx


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"coniq_webhook_secrets": ()}, "CONIQ_WEBHOOK_SECRETS"),
        ({"event_secrets": ()}, "EVENT_SECRETS"),
        ({"admin_token": ""}, "ADMIN_TOKEN"),
        ({"redis_url": ""}, "REDIS_URL"),
        ({"event_secrets": ("whsec_abcde",)}, "EVENT_SECRETS"),
    ],
)
def test_create_app_refuses_missing_or_malformed_settings(settings, change, variable):
    # given settings with one required value missing or malformed
    # when / then the process would stop with one line naming the variable
    with pytest.raises(SettingsError) as caught:
        create_app(replace(settings, **change))
    assert caught.value.variable == variable


def test_healthz_answers_without_io(settings):
    # given an app whose Redis and broker are unreachable
    client = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    # when / then it is still alive
    response = client.get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_returns_200_when_redis_and_broker_answer(client):
    # given the real Redis as store and broker
    # when
    response = client.get("/readyz")
    # then
    assert (response.status_code, response.get_json()) == (200, {"redis": "ok", "broker": "ok"})


@pytest.mark.parametrize(
    ("change", "down"),
    [
        ({"broker_url": "redis://127.0.0.1:1/0"}, {"broker"}),
        ({"redis_url": "redis://127.0.0.1:1/0"}, {"redis", "broker"}),
    ],
)
def test_readyz_returns_503_naming_what_is_down(settings, change, down):
    # given an app whose store or broker is a closed port
    client = create_app(replace(settings, **change)).test_client()
    # when
    started = time.monotonic()
    response = client.get("/readyz")
    # then it answers quickly, naming the unavailable parts
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    body = response.get_json()
    assert body["type"] == PROBLEM + "not-ready"
    assert {name for name, status in body["errors"].items() if status != "ok"} == down
    assert response.headers["Retry-After"] == "5"


def test_openapi_describes_every_endpoint_with_problems_and_signature_headers(client):
    # given / when
    document = client.get("/openapi.json").get_json()
    # then
    assert document["openapi"].startswith("3.1")
    assert {"/webhooks/coniq", "/events", "/healthz", "/readyz", "/openapi.json"} <= set(
        document["paths"]
    )
    ingest = document["paths"]["/events"]["post"]
    assert {p["name"] for p in ingest["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert {"200", "202", "400", "401", "413", "415", "422", "503"} <= set(ingest["responses"])
    assert "Problem" in document["components"]["schemas"]
    refs = _refs(document)
    assert refs <= {f"#/components/schemas/{name}" for name in document["components"]["schemas"]}


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if "$ref" in node else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()


def test_a_doubled_slash_is_not_found_rather_than_redirected_to_the_host_header(client, settings):
    # when a path with "//" arrives with a Host header of the client's choosing
    response = client.get(
        "/dead-letters//x:0:0",
        headers={"Authorization": f"Bearer {settings.admin_token}", "Host": "evil.example"},
    )
    # then it is a 404 problem, with no Location pointing at that host
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "Location" not in response.headers
