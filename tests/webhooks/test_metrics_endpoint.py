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


def test_known_series_are_exposed_at_zero_before_their_first_event(client):
    # when nothing of the kind has happened in this process
    samples = _scrape(client)

    # then the series exist (rate() and absent() alerts need them from the start)
    for source in ("coniq", "internal"):
        assert ("rewardrelay_events_accepted_total", frozenset({("source", source)})) in samples
        key = frozenset({("source", source), ("reason", "signature-invalid")})
        assert ("rewardrelay_events_rejected_total", key) in samples
    for state, provider in [("fulfilled", "rewardops"), ("dead_lettered", "none")]:
        key = frozenset({("state", state), ("provider", provider)})
        assert ("rewardrelay_units_terminal_total", key) in samples


def test_the_metrics_know_every_routable_provider():
    from tasks.routing import PROVIDERS
    from worker import metrics

    assert metrics.PROVIDERS == PROVIDERS


_OTHER_PROCESS = """
from prometheus_client import Counter
Counter("flower_events", "Flower's own series", ["worker"]).labels(worker="w1").inc(7)
Counter("rewardrelay_events_received", "ours", ["source"]).labels(source="coniq").inc(3)
"""


def test_series_of_other_programs_in_the_multiprocess_directory_are_not_exposed(
    tmp_path, monkeypatch
):
    # given a multiprocess directory where another program (Flower) wrote its series too
    import subprocess
    import sys

    from worker import metrics

    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS], env=env, check=True)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    # when the receiver renders the directory
    text = metrics.render().decode()

    # then only our own series are there
    assert 'rewardrelay_events_received_total{source="coniq"} 3.0' in text
    assert "flower_" not in text
