"""Dead letters that explain themselves (issue 16.4), from a real fulfilment attempt.

``fulfil_unit`` runs against real Redis and the Ifeelgoods sandbox over HTTP; Sentry's
real transport posts to a loopback HTTP server standing in for the DSN's host.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk

from sandboxes import SandboxControl, serve_in_thread
from sandboxes.ifeelgoods import create_app as ifeelgoods_app
from tasks.fulfilment import fulfil_unit
from tasks.routing import load_rules
from tasks.runtime import WorkerRuntime, build_runtime
from tests.sentry_inbox import SentryInbox, error_events
from worker import observability
from worker.config import DEFAULT_RULES_FILE, Settings
from worker.stores.dead_letters import LetterStatus, ReplayResult
from worker.stores.models import UnitSpec, UnitState

CREATE_AND_REDEEM = "/fulfillment/v2/promotions/1/rewards/*/redemptions/actions/redeem"
EMAIL = "ada.lovelace@example.com"
CODE = "GIFT-7F3K-99QX"


@pytest.fixture(scope="module")
def ifeelgoods_url() -> Iterator[str]:
    server = serve_in_thread(ifeelgoods_app(api_key="k", api_secret="s-secret"), log_requests=False)
    yield server.url
    server.stop()


@pytest.fixture
def ifeelgoods(ifeelgoods_url: str) -> Iterator[SandboxControl]:
    with SandboxControl(ifeelgoods_url) as control:
        control.reset()
        yield control


def _runtime(settings: Settings, ifeelgoods_url: str, rules_file: Path | None = None) -> Any:
    configured = replace(
        settings,
        ifeelgoods_base_url=f"{ifeelgoods_url}/fulfillment/v2",
        ifeelgoods_api_key="k",
        ifeelgoods_api_secret="s-secret",
        rules_file=rules_file or settings.rules_file,
        retry_max_attempts=2,
        retry_base_seconds=0.01,
        retry_max_delay_seconds=0.02,
    )
    return build_runtime(configured)


@pytest.fixture
def rt(settings: Settings, ifeelgoods_url: str, ifeelgoods: SandboxControl) -> WorkerRuntime:
    runtime: WorkerRuntime = _runtime(settings, ifeelgoods_url)
    return runtime


def _accept(rt: WorkerRuntime, match: dict[str, str]) -> str:
    event_id = f"evt_{time.time_ns()}"
    person = {"email": EMAIL, "first_name": "Ada", "last_name": "L", "id": "c1"}
    body = {"id": event_id, "type": "reward.issued", "data": {"customer": person}}
    rt.inbox.accept(
        event_id=event_id,
        source="coniq",
        event_type="reward.issued",
        fingerprint="f",
        body=json.dumps(body),
        units=[UnitSpec(0, 0, match)],
        now=time.time(),
        stale_after=60,
    )
    return f"{event_id}:0:0"


# --- the provider's own words ----------------------------------------------------------


def test_a_provider_dead_letter_keeps_the_providers_message_redacted(
    rt: WorkerRuntime, ifeelgoods: SandboxControl
) -> None:
    # given Ifeelgoods refusing the order with a message that quotes the member and a code
    message = (
        f"User {EMAIL} (phone +44 20 7946 0958) cannot redeem reward {CODE}: "
        "the promotion allows one redemption per user. " + "More text. " * 40
    )
    ifeelgoods.set_faults(
        {
            "method": "POST",
            "path": CREATE_AND_REDEEM,
            "kind": "permanent",
            "status": 422,
            "error": "parameter_error",
            "message": message,
        }
    )
    unit_id = _accept(rt, {"offer_id": "1001"})

    # when the attempt ends in a dead letter
    assert fulfil_unit(unit_id, rt).action == "dead_lettered"

    # then the letter says what the provider said, without the member, the code or the bulk
    letter = rt.dead_letters.get(unit_id)
    assert letter is not None and letter.reason == "parameter_error"
    kept = letter.provider_message
    assert kept.startswith("User [redacted] (phone [redacted]) cannot redeem reward [redacted]")
    assert "one redemption per user" in kept
    assert EMAIL not in kept and CODE not in kept and "7946" not in kept
    assert len(kept) <= 160
    # and the listing's view of it leaves the message out
    assert "provider_message" not in letter.summary()


def test_a_letter_written_again_does_not_keep_an_earlier_message(
    rt: WorkerRuntime, ifeelgoods: SandboxControl
) -> None:
    # given a letter with a provider message, replayed, then dead-lettered without one
    ifeelgoods.set_faults(
        {"path": CREATE_AND_REDEEM, "kind": "permanent", "status": 422, "message": "Closed."}
    )
    unit_id = _accept(rt, {"offer_id": "1001"})
    fulfil_unit(unit_id, rt)
    assert rt.dead_letters.get(unit_id).provider_message == "Closed."  # type: ignore[union-attr]
    rt.dead_letters.replay(unit_id, now=time.time())
    ifeelgoods.set_faults({"path": "*", "kind": "status", "status": 503, "body": False})

    # when the replay's attempts exhaust on bodiless 503s
    for _ in range(5):
        if fulfil_unit(unit_id, rt).action == "dead_lettered":
            break
        time.sleep(0.05)

    # then the new letter carries no stale explanation
    letter = rt.dead_letters.get(unit_id)
    assert letter is not None and letter.reason == "retries-exhausted" and letter.times == 2
    assert letter.provider_message == ""


# --- unroutable: what found no rule -----------------------------------------------------


def test_an_unroutable_letter_names_the_field_value_and_rules_file(rt: WorkerRuntime) -> None:
    # given a Coniq reward whose offer no rule routes
    unit_id = _accept(rt, {"offer_id": "9999", "reward_id": "rw_1"})

    # when
    assert fulfil_unit(unit_id, rt).action == "unroutable"

    # then the letter names the field, its value, the rules file and the rules' fingerprint
    letter = rt.dead_letters.get(unit_id)
    assert letter is not None and letter.reason == "unroutable"
    assert (letter.unrouted_field, letter.unrouted_value) == ("offer_id", "9999")
    assert letter.rules_file == str(DEFAULT_RULES_FILE)
    assert letter.rules_fingerprint == load_rules(DEFAULT_RULES_FILE).fingerprint
    assert "offer_id='9999'" in letter.detail and str(DEFAULT_RULES_FILE) in letter.detail


def test_an_unroutable_event_type_is_named_as_such(rt: WorkerRuntime) -> None:
    # given a unit of an event type no rule covers
    unit_id = _accept(rt, {"reward_code": "GIFT10"})
    rt.redis.hset(rt.keys.unit(unit_id), "event_type", "reward.revoked")
    # when
    fulfil_unit(unit_id, rt)
    # then
    letter = rt.dead_letters.get(unit_id)
    assert letter is not None
    assert letter.detail.startswith(f"no rule in {DEFAULT_RULES_FILE} covers coniq reward.revoked")


@pytest.fixture
def sentry_inbox(settings: Settings) -> Iterator[SentryInbox]:
    inbox = SentryInbox()
    threading.Thread(target=inbox.serve_forever, daemon=True).start()
    assert observability.init_sentry(replace(settings, sentry_dsn=inbox.dsn), component="worker")
    yield inbox
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.init()  # an inactive client again for the rest of the session
    inbox.shutdown()
    inbox.server_close()


def test_an_unroutable_unit_raises_one_sentry_event_naming_what_found_no_rule(
    rt: WorkerRuntime, sentry_inbox: SentryInbox
) -> None:
    # given a unit no rule routes
    unit_id = _accept(rt, {"offer_id": "9999"})

    # when it is delivered twice (a redelivery after the letter was written)
    fulfil_unit(unit_id, rt)
    fulfil_unit(unit_id, rt)
    sentry_sdk.flush(timeout=5)

    # then exactly one Sentry event, tagged, whose context names the field and value
    events = error_events(sentry_inbox.envelopes)
    assert len(events) == 1
    [event] = events
    assert dict(event["tags"])["unit_id"] == unit_id
    assert dict(event["tags"])["reason"] == "unroutable"
    context = event["contexts"]["dead_letter"]
    assert (context["field"], context["value"]) == ("offer_id", "9999")
    assert str(DEFAULT_RULES_FILE) in context["detail"]
    assert EMAIL not in b"".join(sentry_inbox.envelopes).decode(errors="replace")


# --- replaying an unroutable letter ----------------------------------------------------


def _rules_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "rules.toml"
    shutil.copyfile(DEFAULT_RULES_FILE, path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(extra)
    return path


ROUTE_9999 = """
[[rule]]
name = "coniq-offer-9999"
source = "coniq"
event = "reward.issued"
match = { offer_id = "9999" }
provider = "ifeelgoods"
promotion_id = 1
sku = "APP-ITU-10USD-US"
"""


def test_replay_under_unchanged_rules_is_refused_and_changes_nothing(rt: WorkerRuntime) -> None:
    # given an unroutable letter
    unit_id = _accept(rt, {"offer_id": "9999"})
    fulfil_unit(unit_id, rt)

    # when it is replayed while the rules decide as they did
    result = rt.dead_letters.replay(
        unit_id, now=time.time(), rules_fingerprint=rt.rules.fingerprint
    )

    # then it is refused, and the letter and the unit are as they were
    assert result is ReplayResult.RULES_UNCHANGED
    assert rt.dead_letters.get(unit_id).status is LetterStatus.WAITING  # type: ignore[union-attr]
    assert rt.ledger.get(unit_id).state is UnitState.UNROUTABLE  # type: ignore[union-attr]
    assert rt.redis.zscore(rt.keys.live, unit_id) is None


def test_a_comment_is_not_a_change_of_rules(tmp_path: Path) -> None:
    # given the shipped rules and a copy with only a comment added
    commented = _rules_with(tmp_path, "\n# reviewed on Monday\n")
    # then both decide the same, so their fingerprints are equal; a new rule changes it
    assert load_rules(commented).fingerprint == load_rules(DEFAULT_RULES_FILE).fingerprint
    changed = _rules_with(tmp_path, ROUTE_9999)
    assert load_rules(changed).fingerprint != load_rules(DEFAULT_RULES_FILE).fingerprint


def test_replay_after_a_rule_was_added_fulfils_the_unit(
    rt: WorkerRuntime, settings: Settings, ifeelgoods_url: str, tmp_path: Path
) -> None:
    # given an unroutable letter, then a rule for it and a worker restarted on the new rules
    unit_id = _accept(rt, {"offer_id": "9999"})
    fulfil_unit(unit_id, rt)
    restarted: WorkerRuntime = _runtime(settings, ifeelgoods_url, _rules_with(tmp_path, ROUTE_9999))

    # when the letter is replayed under the new rules' fingerprint
    result = rt.dead_letters.replay(
        unit_id, now=time.time(), rules_fingerprint=restarted.rules.fingerprint
    )

    # then it goes back on the schedule and the restarted worker fulfils it
    assert result is ReplayResult.REPLAYED
    assert fulfil_unit(unit_id, restarted).action == "fulfilled"


def test_a_forced_replay_skips_the_check(rt: WorkerRuntime) -> None:
    # given an unroutable letter
    unit_id = _accept(rt, {"offer_id": "9999"})
    fulfil_unit(unit_id, rt)
    # when replayed with no fingerprint (force)
    result = rt.dead_letters.replay(unit_id, now=time.time(), rules_fingerprint="")
    # then it is replayed (and dead-letters again: the operator asked for it)
    assert result is ReplayResult.REPLAYED
    assert fulfil_unit(unit_id, rt).action == "unroutable"
    assert rt.dead_letters.get(unit_id).times == 2  # type: ignore[union-attr]
