"""``rewardrelay erase``: the erasure from the command line, against the tests' Redis."""

from __future__ import annotations

import json
import time

import pytest

from rewardrelay.cli import main
from tests.conftest import redis_url
from tests.lifecycle_checks import traces_of
from worker.config import Settings
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState
from worker.stores.personal_data import SubjectKind, hasher_for

ADDRESS = "grace@example.com"


@pytest.fixture
def store_env(cli_env, monkeypatch, key_prefix) -> Keys:
    monkeypatch.setenv("REDIS_URL", redis_url(14))
    monkeypatch.setenv("RR_KEY_PREFIX", key_prefix)
    return Keys(key_prefix)


def accept(redis_client, keys: Keys, event_id: str) -> str:
    """One accepted event for ADDRESS, indexed as the edge indexes it; its unit id."""
    hasher = hasher_for(Settings.from_env())  # the environment the command will read
    Inbox(redis_client, keys).accept(
        event_id=event_id,
        source="internal",
        event_type="reward.granted",
        fingerprint="fp",
        body=json.dumps({"id": event_id, "data": {"recipient": {"email": ADDRESS}}}),
        units=[UnitSpec(line=0, index=0, match={"reward_code": "GIFT10"})],
        now=time.time(),
        stale_after=45.0,
        subjects=[hasher.digest(SubjectKind.EMAIL, ADDRESS)],
    )
    return f"{event_id}:0:0"


def test_erase_prints_the_counts_and_leaves_no_trace(store_env, redis_client, capsys):
    # given one fulfilled reward of Grace's
    keys = store_env
    unit_id = accept(redis_client, keys, "evt_cli")
    ledger = Ledger(redis_client, keys)
    begun = ledger.begin(unit_id, now=time.time(), lease_seconds=60)
    record = AttemptRecord(
        attempt=1, at=time.time(), mode=begun.decision, outcome=AttemptOutcome.FULFILLED
    )
    ledger.finish(unit_id, 1, UnitState.FULFILLED, record, now=time.time(), next_check_at=None)
    assert begun.attempt == 1
    # when
    code = main(["erase", "--email", ADDRESS.upper(), "--json"])
    # then
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["events"] == 1
    assert ADDRESS not in (out + err).casefold()
    assert traces_of(redis_client, keys.prefix, ADDRESS) == []


def test_erase_refuses_with_status_1_naming_units_in_flight(store_env, redis_client, capsys):
    # given a reward of Grace's still pending
    unit_id = accept(redis_client, store_env, "evt_cli_open")
    # when
    code = main(["erase", "--email", ADDRESS])
    # then
    _, err = capsys.readouterr()
    assert code == 1
    assert unit_id in err and "pending" in err
    assert traces_of(redis_client, store_env.prefix, ADDRESS)


def test_erase_needs_exactly_one_subject(store_env, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["erase"])
    assert usage.value.code == 2
    assert main(["erase", "--email", "no-at-sign"]) == 2
