"""Admin API for provider lanes: list, pause, resume; typed errors; audit log; OpenAPI."""

from __future__ import annotations

import json
import time

from tests.conftest import TEST_ADMIN_TOKEN
from worker.stores.inbox import Inbox
from worker.stores.lanes import LaneStore
from worker.stores.ledger import Ledger
from worker.stores.models import UnitSpec

AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
PROBLEM = "application/problem+json"


def _store(app) -> LaneStore:
    ctx = app.extensions["rewardrelay"]
    return LaneStore(ctx.redis, ctx.keys)


def _park(app, count: int) -> list[str]:
    """Units that met a paused lane: set aside through the real stores."""
    ctx = app.extensions["rewardrelay"]
    now = time.time()
    Inbox(ctx.redis, ctx.keys).accept(
        event_id="evt_lanes",
        source="coniq",
        event_type="reward.issued",
        fingerprint="fp",
        body="{}",
        units=[UnitSpec(line=0, index=i, match={"offer_id": "1001"}) for i in range(count)],
        now=now,
        stale_after=45,
    )
    ledger = Ledger(ctx.redis, ctx.keys)
    ids = [f"evt_lanes:0:{i}" for i in range(count)]
    for n, uid in enumerate(ids):
        begin = ledger.begin(uid, now=now + n, lease_seconds=30)
        assert _store(app).set_aside(
            "ifeelgoods",
            uid,
            begin.attempt,
            restore="pending",
            now=now + n,
            come_back_at=now + 3600,
            park=True,
            clear_first_attempt=True,
        )
    return ids


def test_lanes_lists_every_provider_open_by_default(client) -> None:
    response = client.get("/lanes", headers=AUTH)
    assert response.status_code == 200
    items = {item["provider"]: item for item in response.get_json()["items"]}
    assert set(items) == {"ifeelgoods", "rewardops"}
    assert items["ifeelgoods"]["state"] == "open" and items["ifeelgoods"]["units_waiting"] == 0


def test_pause_then_resume_is_audited_and_releases_waiting_units(app, client) -> None:
    paused = client.post(
        "/lanes/ifeelgoods/pause", headers=AUTH, json={"reason": "vendor maintenance", "by": "ana"}
    )
    assert paused.status_code == 200
    assert paused.get_json()["state"] == "paused"
    assert paused.get_json()["reason"] == "vendor maintenance"
    ids = _park(app, 3)
    listed = {i["provider"]: i for i in client.get("/lanes", headers=AUTH).get_json()["items"]}
    assert listed["ifeelgoods"]["units_waiting"] == 3
    assert listed["rewardops"]["state"] == "open"

    resumed = client.post("/lanes/ifeelgoods/resume", headers=AUTH)
    assert resumed.status_code == 200
    assert resumed.get_json()["state"] == "open" and resumed.get_json()["units_waiting"] == 0
    ctx = app.extensions["rewardrelay"]
    due = {m.decode() for m in ctx.redis.zrangebyscore(ctx.keys.live, "-inf", time.time())}
    assert set(ids) <= due  # released onto the schedule
    log = _store(app).audit_log()
    assert [(e["action"], e["by"], e["reason"]) for e in log] == [
        ("resume", "admin-api", ""),
        ("pause", "ana", "vendor maintenance"),
    ]


def test_unknown_provider_is_a_404_problem(client) -> None:
    response = client.post("/lanes/acme/pause", headers=AUTH)
    assert response.status_code == 404
    assert response.content_type == PROBLEM
    assert response.get_json()["type"].endswith("lane-not-found")


def test_bad_bodies_are_4xx_problems(client) -> None:
    not_json = client.post(
        "/lanes/ifeelgoods/pause",
        headers={**AUTH, "Content-Type": "application/json"},
        data="{not json",
    )
    assert not_json.status_code == 400 and not_json.content_type == PROBLEM
    wrong = client.post("/lanes/ifeelgoods/pause", headers=AUTH, json={"reason": 7, "x": 1})
    assert wrong.status_code == 422 and wrong.content_type == PROBLEM
    assert set(wrong.get_json()["errors"]) == {"reason", "x"}
    long = client.post("/lanes/ifeelgoods/pause", headers=AUTH, json={"reason": "x" * 201})
    assert long.status_code == 422
    array = client.post("/lanes/ifeelgoods/resume", headers=AUTH, json=[1])
    assert array.status_code == 422
    form = client.post("/lanes/ifeelgoods/pause", headers=AUTH, data={"reason": "x"})
    assert form.status_code == 415 and form.content_type == PROBLEM


def test_lanes_need_the_admin_token(client) -> None:
    assert client.get("/lanes").status_code == 401
    assert client.post("/lanes/ifeelgoods/pause").status_code == 401


def test_lanes_are_in_the_openapi_description(client) -> None:
    document = json.loads(client.get("/openapi.json").get_data())
    assert {"/lanes", "/lanes/{provider}/pause", "/lanes/{provider}/resume"} <= set(
        document["paths"]
    )
    pause = document["paths"]["/lanes/{provider}/pause"]["post"]
    assert {"200", "400", "401", "404", "422"} <= set(pause["responses"])


def test_metrics_show_lane_state_and_units_waiting(app, client) -> None:
    client.post("/lanes/ifeelgoods/pause", headers=AUTH, json={"reason": "window"})
    _park(app, 2)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rewardrelay_lane_state{lane="ifeelgoods",reason="window",state="paused"} 1.0' in text
    assert 'rewardrelay_lane_state{lane="ifeelgoods",reason="",state="open"} 0.0' in text
    assert 'rewardrelay_lane_units_waiting{lane="ifeelgoods"} 2.0' in text
    assert 'rewardrelay_lane_transitions_total{lane="ifeelgoods",to="paused"}' in text
