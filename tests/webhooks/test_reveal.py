"""Audited reveal of a unit's full codes: who may, what is refused, and how (problem+json)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.webhooks.test_admin_api import CODE, Seed
from webhooks import create_app

PROBLEM = "https://rewardrelay.dev/problems/"
WHY = {"actor": "support:kim", "reason": "member says the email never arrived"}


@pytest.fixture
def fulfilled(app) -> str:
    seed = Seed(app)
    [unit_id] = seed.event("evt_rv", at=time.time())
    seed.fulfil(unit_id, time.time())
    return unit_id


def url(unit_id: str) -> str:
    return f"/fulfillments/evt_rv/units/{unit_id}/reveal"


def test_reveal_answers_the_full_code_and_records_who_asked(client, app, settings, fulfilled):
    admin = {"Authorization": f"Bearer {settings.admin_token}"}

    answer = client.post(url(fulfilled), headers=admin, json=WHY)

    assert answer.status_code == 200
    assert answer.json == {"unit_id": fulfilled, "codes": [CODE], "links": []}
    assert answer.headers["Cache-Control"] == "no-store"
    [entry] = Seed(app).ledger.reveal_log()
    assert entry["unit_id"] == fulfilled and entry["reason"] == WHY["reason"]
    assert entry["actor"].startswith("support:kim (admin-api from ")
    assert time.time() - entry["at"] < 60


@pytest.mark.parametrize(
    ("headers", "body", "status", "problem"),
    [
        ({}, WHY, 401, "unauthorized"),
        (None, {"reason": "x"}, 422, "validation-failed"),
        (None, {"actor": "a", "reason": "r" * 501}, 422, "validation-failed"),
        (None, {"actor": "a", "reason": "r", "codes": "all"}, 422, "validation-failed"),
        (None, None, 400, "body-required"),
    ],
)
def test_reveal_refusals(client, app, settings, fulfilled, headers, body, status, problem):
    admin = {"Authorization": f"Bearer {settings.admin_token}"}

    answer = client.post(url(fulfilled), headers=admin if headers is None else headers, json=body)

    assert (answer.status_code, answer.json["type"]) == (status, PROBLEM + problem)
    assert CODE not in answer.get_data(as_text=True)
    assert Seed(app).ledger.reveal_log() == []  # a refused request reveals and records nothing


def test_reveal_of_an_unknown_or_codeless_unit_is_404(client, app, settings, fulfilled):
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    [pending] = Seed(app).event("evt_rv2", at=time.time())

    other_event = client.post(
        f"/fulfillments/evt_x/units/{fulfilled}/reveal", headers=admin, json=WHY
    )
    no_codes = client.post(f"/fulfillments/evt_rv2/units/{pending}/reveal", headers=admin, json=WHY)

    assert (other_event.status_code, other_event.json["type"]) == (404, PROBLEM + "unit-not-found")
    not_a_unit = client.post("/fulfillments/evt_rv/units/evt_rv:x/reveal", headers=admin, json=WHY)
    not_a_unit_body: Any = not_a_unit.json
    assert (not_a_unit.status_code, not_a_unit_body["type"]) == (404, PROBLEM + "unit-not-found")
    assert (no_codes.status_code, no_codes.json["type"]) == (404, PROBLEM + "codes-not-found")


def test_reveal_with_the_wrong_keys_is_a_409_not_a_crash(app, settings, fulfilled):
    # given an edge whose CODE_KEYS no longer holds the key the codes were sealed with
    stranger = replace(settings, code_keys=(Fernet.generate_key().decode(),))
    unkeyed = replace(settings, code_keys=())
    admin = {"Authorization": f"Bearer {settings.admin_token}"}

    wrong = create_app(stranger).test_client().post(url(fulfilled), headers=admin, json=WHY)
    unset = create_app(unkeyed).test_client().post(url(fulfilled), headers=admin, json=WHY)

    wrong_body: Any = wrong.json
    unset_body: Any = unset.json
    assert (wrong.status_code, wrong_body["type"]) == (409, PROBLEM + "codes-unreadable")
    assert "CODE_KEYS" in wrong_body["detail"]
    assert (unset.status_code, unset_body["type"]) == (503, PROBLEM + "codes-unavailable")


def test_reveal_is_described_in_openapi(client):
    paths = client.get("/openapi.json").json["paths"]
    operation = paths["/fulfillments/{event_id}/units/{unit_id}/reveal"]["post"]
    assert operation["security"] == [{"adminToken": []}]
    assert set(operation["responses"]) >= {"200", "401", "404", "409", "422", "503"}
