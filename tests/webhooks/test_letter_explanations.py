"""Dead letters that explain themselves (issue 16.4), through the admin API, the console
and ``rewardrelay dlq`` (over real HTTP to the real app).

Letters are written by the real ledger (``Ledger.finish``) with the fields the worker
writes; the rules file is a per-test copy, so a test can change it as an operator would.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rewardrelay.cli import main
from tasks.routing import load_rules
from tests.webhooks.test_admin_api import Seed
from tests.webhooks.test_console import _csrf
from webhooks.paths import dead_letter_path
from worker.config import DEFAULT_RULES_FILE, Settings
from worker.stores.dead_letters import LetterStatus
from worker.stores.models import UnitState

PROBLEM = "https://rewardrelay.dev/problems/"
MESSAGE = "User [redacted] already redeemed this promotion."
NEW_RULE = """
[[rule]]
name = "coniq-offer-9999"
source = "coniq"
event = "reward.issued"
match = { offer_id = "9999" }
provider = "ifeelgoods"
promotion_id = 1
sku = "APP-ITU-10USD-US"
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    shutil.copyfile(DEFAULT_RULES_FILE, path)
    return path


@pytest.fixture
def settings(settings: Settings, rules_file: Path) -> Settings:
    return replace(settings, rules_file=rules_file)


@pytest.fixture
def seed(app) -> Seed:
    return Seed(app)


@pytest.fixture
def admin(settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def provider_letter(seed: Seed, event_id: str) -> str:
    """A provider dead letter carrying the provider's (already redacted) message."""
    (unit_id,) = seed.event(event_id, at=time.time() - 5)
    seed.dead(unit_id, time.time() - 5)
    seed.redis.hset(seed.keys.dead_letter(unit_id), "provider_message", MESSAGE)
    return unit_id


def unroutable_letter(seed: Seed, event_id: str, rules_file: Path) -> str:
    """An unroutable letter as the worker writes it under ``rules_file``."""
    (unit_id,) = seed.event(event_id, at=time.time() - 5)
    rules = load_rules(rules_file)
    seed._attempt(
        unit_id,
        time.time() - 4,
        "unroutable",
        state=UnitState.UNROUTABLE,
        next_check_at=None,
        index=seed.keys.unroutable,
        dead_letter={
            "id": unit_id,
            "event_id": event_id,
            "source": "coniq",
            "provider": "",
            "product": "",
            "reason": "unroutable",
            "error_type": "",
            "status_code": "",
            "detail": f"no rule in {rules_file} matches offer_id='9999' (coniq reward.issued)",
            "provider_message": "",
            "unrouted_field": "offer_id",
            "unrouted_value": "9999",
            "rules_file": str(rules_file),
            "rules_fingerprint": rules.fingerprint,
            "attempts": 1,
            "created_at": time.time() - 4,
            "status": "waiting",
        },
    )
    return unit_id


def assert_problem(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"] == PROBLEM + kind
    return body


# --- admin API -------------------------------------------------------------------------


def test_a_letter_shows_the_providers_message_and_a_listing_does_not(client, admin, seed):
    # given
    letter_id = provider_letter(seed, "evt_msg")
    # when
    one = client.get(dead_letter_path(letter_id), headers=admin).get_json()
    listed = client.get("/dead-letters", headers=admin).get_json()["items"]
    # then
    assert one["provider_message"] == MESSAGE
    [item] = [i for i in listed if i["id"] == letter_id]
    assert "provider_message" not in item and item["reason"] == "permanent"


def test_an_unroutable_letter_names_what_found_no_rule(client, admin, seed, rules_file):
    # given
    letter_id = unroutable_letter(seed, "evt_unr", rules_file)
    # when
    body = client.get(dead_letter_path(letter_id), headers=admin).get_json()
    # then
    assert (body["unrouted_field"], body["unrouted_value"]) == ("offer_id", "9999")
    assert body["rules_file"] == str(rules_file)
    assert body["rules_fingerprint"] == load_rules(rules_file).fingerprint


def test_replay_under_unchanged_rules_is_a_409_and_changes_nothing(client, admin, seed, rules_file):
    # given an unroutable letter and the rules it was written under
    letter_id = unroutable_letter(seed, "evt_same", rules_file)
    # when it is replayed
    response = client.post(dead_letter_path(letter_id, "replay"), headers=admin)
    # then it is refused, saying why and what to do
    body = assert_problem(response, 409, "rules-unchanged")
    assert "rules have not changed" in body["detail"] and "force" in body["detail"]
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING
    assert seed.ledger.get(letter_id).state is UnitState.UNROUTABLE


def test_replay_after_the_rules_changed_is_accepted(client, admin, seed, rules_file):
    # given an unroutable letter, then a rule for it added to the file
    letter_id = unroutable_letter(seed, "evt_changed", rules_file)
    with rules_file.open("a", encoding="utf-8") as handle:
        handle.write(NEW_RULE)
    # when
    response = client.post(dead_letter_path(letter_id, "replay"), headers=admin)
    # then
    assert response.status_code == 202
    assert seed.letters.get(letter_id).status is LetterStatus.REPLAYED
    assert seed.ledger.get(letter_id).state is UnitState.PENDING


def test_force_replays_under_unchanged_rules(client, admin, seed, rules_file):
    # given
    letter_id = unroutable_letter(seed, "evt_force", rules_file)
    # when
    response = client.post(
        dead_letter_path(letter_id, "replay"), headers=admin, json={"force": True}
    )
    # then
    assert response.status_code == 202
    assert seed.letters.get(letter_id).status is LetterStatus.REPLAYED


@pytest.mark.parametrize(
    ("kwargs", "status", "kind"),
    [
        ({"json": {"force": "yes"}}, 422, "validation-failed"),
        ({"json": {"forse": True}}, 422, "validation-failed"),
        ({"data": "force=1", "content_type": "application/x-www-form-urlencoded"}, 415,
         "unsupported-media-type"),
        ({"data": "{", "content_type": "application/json"}, 400, "malformed-json"),
    ],
)  # fmt: skip
def test_a_replay_body_that_is_not_a_force_flag_is_refused(
    client, admin, seed, rules_file, kwargs, status, kind
):
    # given
    letter_id = unroutable_letter(seed, "evt_body", rules_file)
    # when
    response = client.post(dead_letter_path(letter_id, "replay"), headers=admin, **kwargs)
    # then
    assert_problem(response, status, kind)
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING


def test_bulk_replay_lists_unroutable_letters_under_unchanged_rules(
    client, admin, seed, rules_file
):
    # given a provider letter and an unroutable one
    provider = provider_letter(seed, "evt_bulk_p")
    unroutable = unroutable_letter(seed, "evt_bulk_u", rules_file)
    # when every letter is replayed
    body = client.post("/dead-letters/replay", headers=admin, json={}).get_json()
    # then the provider letter is replayed and the unroutable one named, not replayed
    assert body["replayed"] == [provider] and body["rules_unchanged"] == [unroutable]
    assert seed.letters.get(unroutable).status is LetterStatus.WAITING
    # and with force, it is replayed too
    forced = client.post("/dead-letters/replay", headers=admin, json={"force": True})
    assert forced.get_json()["replayed"] == [unroutable]


def test_a_rules_file_that_no_longer_loads_is_a_409_not_a_500(client, admin, seed, rules_file):
    # given
    letter_id = unroutable_letter(seed, "evt_broken", rules_file)
    rules_file.write_text("[[rule]]\nname = 3\n", encoding="utf-8")
    # when
    response = client.post(dead_letter_path(letter_id, "replay"), headers=admin)
    # then
    assert_problem(response, 409, "rules-invalid")


# --- console ---------------------------------------------------------------------------


def _signed_in(client, settings):
    page = client.get("/admin/sign-in")
    response = client.post(
        "/admin/sign-in",
        data={"token": settings.admin_token, "csrf_token": _csrf(page.text), "next": ""},
    )
    assert response.status_code == 303
    return client


def test_the_letter_page_shows_the_message_and_what_found_no_rule(
    client, settings, seed, rules_file
):
    # given
    browser = _signed_in(client, settings)
    provider = provider_letter(seed, "evt_page_p")
    unroutable = unroutable_letter(seed, "evt_page_u", rules_file)
    # when
    provider_page = browser.get(f"/admin/dead-letters/{provider}").text
    unroutable_page = browser.get(f"/admin/dead-letters/{unroutable}").text
    # then
    assert "Provider said" in provider_page and MESSAGE in provider_page
    assert "Found no rule" in unroutable_page
    assert "<code>offer_id</code> = <code>9999</code>" in unroutable_page
    assert str(rules_file) in unroutable_page


def test_the_console_says_the_rules_are_unchanged_and_replays_only_when_forced(
    client, settings, seed, rules_file
):
    # given an unroutable letter and the confirmation page
    browser = _signed_in(client, settings)
    letter_id = unroutable_letter(seed, "evt_console", rules_file)
    confirm = browser.get(f"/admin/dead-letters/{letter_id}/replay").text
    assert "have not changed" in confirm and 'name="force"' in confirm

    # when confirmed without ticking "replay anyway"
    refused = browser.post(
        f"/admin/dead-letters/{letter_id}/replay", data={"csrf_token": _csrf(confirm)}
    )
    # then nothing happens and the page says why
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING
    shown = browser.get(refused.headers["Location"]).text
    assert "Not replayed" in shown and "rules have not changed" in shown

    # when confirmed with it ticked
    browser.post(
        f"/admin/dead-letters/{letter_id}/replay",
        data={"csrf_token": _csrf(shown), "force": "1"},
    )
    # then
    assert seed.letters.get(letter_id).status is LetterStatus.REPLAYED


# --- rewardrelay dlq -------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, tmp_path, settings):
    monkeypatch.setenv("RR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADMIN_TOKEN", settings.admin_token)
    monkeypatch.setenv("CONIQ_WEBHOOK_SECRETS", settings.coniq_webhook_secrets[0])
    monkeypatch.setenv("EVENT_SECRETS", settings.event_secrets[0])
    for name in ("REDIS_URL", "PORT", "RULES_FILE", "RR_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def test_dlq_show_prints_the_providers_message(cli_env, live_url, seed, capsys):
    # given
    letter_id = provider_letter(seed, "evt_cli_show")
    # when
    code = main(["dlq", "show", letter_id, "--url", live_url])
    # then
    assert code == 0
    assert MESSAGE in capsys.readouterr().out


def test_dlq_replay_says_the_rules_are_unchanged_and_force_replays(
    cli_env, live_url, seed, rules_file, capsys
):
    # given
    letter_id = unroutable_letter(seed, "evt_cli_replay", rules_file)
    # when replayed as is
    code = main(["dlq", "replay", letter_id, "--url", live_url])
    # then it fails with the reason
    assert code == 1
    assert "rules-unchanged" in capsys.readouterr().err
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING
    # when forced
    assert main(["dlq", "replay", letter_id, "--force", "--url", live_url]) == 0
    # then
    assert seed.letters.get(letter_id).status is LetterStatus.REPLAYED
