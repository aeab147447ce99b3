"""GET /metrics at the edge (one process, no multiprocess directory): the ingest counters
by source and reason, and the gauges read from Redis at scrape time.

The multiprocess case (gunicorn + Celery children) is tests/integration/test_operator_e2e.py.
"""

from __future__ import annotations

import time
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from tests.webhooks.test_admin_api import Seed
from webhooks import create_app


def _scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _get(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_ingest_outcomes_are_counted_by_source_and_reason(client, signed_post, coniq_event):
    # given
    before = _scrape(client)
    event = coniq_event()

    # when one event is accepted, redelivered, and one request has a bad signature
    assert signed_post(client, "/webhooks/coniq", event).status_code == 202
    assert signed_post(client, "/webhooks/coniq", event).status_code in (200, 202)
    bad = signed_post(client, "/webhooks/coniq", coniq_event(), signature="v1,AAAA")
    assert bad.status_code == 401
    after = _scrape(client)

    # then each counter moved by exactly its share
    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert delta("rewardrelay_events_received_total", source="coniq") == 3
    assert delta("rewardrelay_events_accepted_total", source="coniq") == 1
    assert delta("rewardrelay_events_duplicate_total", source="coniq") == 1
    assert delta("rewardrelay_events_rejected_total", source="coniq", reason="signature-invalid")
    assert delta("rewardrelay_events_received_total", source="internal") == 0


def test_store_gauges_come_from_redis(client, app):
    # given two dead letters waiting
    seed = Seed(app)
    seed.letter("evt_m1", time.time())
    seed.letter("evt_m2", time.time())

    # when
    samples = _scrape(client)

    # then
    assert _get(samples, "rewardrelay_store_up") == 1
    assert _get(samples, "rewardrelay_dead_letters_waiting") == 2


def test_scrape_still_answers_when_redis_is_down(settings):
    # given
    client = create_app(replace(settings, redis_url="redis://127.0.0.1:9/0")).test_client()

    # when
    samples = _scrape(client)

    # then
    assert _get(samples, "rewardrelay_store_up") == 0
    assert ("rewardrelay_dead_letters_waiting", frozenset()) not in samples


def test_openapi_describes_metrics_and_the_console(client):
    # when
    document = client.get("/openapi.json").get_json()

    # then
    paths = document["paths"]
    assert "/metrics" in paths
    for path in (
        "/admin/sign-in",
        "/admin/dead-letters",
        "/admin/dead-letters/{letter_id}",
        "/admin/dead-letters/{letter_id}/replay",
        "/admin/dead-letters/{letter_id}/discard",
        "/admin/events",
    ):
        assert path in paths
    assert document["components"]["securitySchemes"]["consoleSession"]["in"] == "cookie"
