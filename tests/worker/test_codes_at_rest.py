"""Reward codes at rest: sealed under CODE_KEYS, masked for display, rotated in place.

Real Redis (the store tests' database, a prefix of the test's own) and real Fernet keys.
"""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from rewardrelay.cli import main
from worker.config import Settings, SettingsError
from worker.stores.crypto import CodeKeyError, CodeVault, SealedCodes
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState

NOW = 1_800_000_000.0
CODE, PIN, LINK = "GIFT-4455-6677-8899", "PIN-0042-7731", "https://redeem.example/#/HTM9V-U6CE8"
OLD, NEW, STRANGER = (Fernet.generate_key().decode() for _ in range(3))


def fulfil(redis_client, keys: Keys, ledger: Ledger, event_id: str) -> str:
    """One unit accepted and fulfilled through the real stores, with a code, PIN and link."""
    Inbox(redis_client, keys).accept(
        event_id=event_id,
        source="coniq",
        event_type="reward.issued",
        fingerprint="fp",
        body=json.dumps({"id": event_id}),
        units=[UnitSpec(line=0, index=0, match={"offer_id": "1001"})],
        now=NOW,
        stale_after=45.0,
    )
    unit_id = f"{event_id}:0:0"
    begun = ledger.begin(unit_id, now=NOW, lease_seconds=60)
    record = AttemptRecord(
        attempt=begun.attempt, at=NOW, mode=begun.decision, outcome=AttemptOutcome.FULFILLED
    )
    assert ledger.finish(
        unit_id,
        begun.attempt,
        UnitState.FULFILLED,
        record,
        now=NOW,
        next_check_at=None,
        fields={"provider": "ifeelgoods", **ledger.sealed_fields([CODE, PIN], [LINK])},
    )
    return unit_id


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


def test_vault_seals_with_the_first_key_and_opens_with_any():
    sealed = CodeVault([OLD]).seal(SealedCodes((CODE, PIN), (LINK,)))

    assert CODE not in sealed and PIN not in sealed and LINK not in sealed
    assert CodeVault([NEW, OLD]).open(sealed) == SealedCodes((CODE, PIN), (LINK,))
    with pytest.raises(CodeKeyError):
        CodeVault([STRANGER]).open(sealed)
    with pytest.raises(CodeKeyError):
        CodeVault([OLD]).open(sealed[:-4] + "AAAA")  # tampered: authentication fails
    with pytest.raises(CodeKeyError):
        CodeVault([]).seal(SealedCodes((CODE,)))


def test_ledger_stores_codes_sealed_and_shows_them_masked(redis_client, keys):
    ledger = Ledger(redis_client, keys, CodeVault([OLD]))

    unit_id = fulfil(redis_client, keys, ledger, "evt_sealed")

    stored = redis_client.hgetall(keys.unit(unit_id))
    assert not [v for v in stored.values() if any(s.encode() in v for s in (CODE, PIN, LINK))]
    assert ledger.codes(unit_id) == ["****8899", "****7731"]
    unit = ledger.get(unit_id)
    assert unit is not None and unit.has_codes


def test_reveal_is_audited_before_the_codes_are_read(redis_client, keys):
    ledger = Ledger(redis_client, keys, CodeVault([OLD]))
    unit_id = fulfil(redis_client, keys, ledger, "evt_reveal")

    revealed = ledger.reveal(unit_id, actor="support:kim", reason="ticket 88", now=NOW + 5)
    with pytest.raises(CodeKeyError):
        Ledger(redis_client, keys, CodeVault([STRANGER])).reveal(
            unit_id, actor="support:lee", reason="ticket 89", now=NOW + 6
        )

    assert revealed == SealedCodes((CODE, PIN), (LINK,))
    log = ledger.reveal_log()
    assert [(e["unit_id"], e["actor"], e["reason"], e["at"]) for e in log] == [
        (unit_id, "support:kim", "ticket 88", NOW + 5),
        (unit_id, "support:lee", "ticket 89", NOW + 6),  # asked for, even if unreadable
    ]
    assert ledger.reveal("evt_reveal:9:9", actor="a", reason="r", now=NOW) is None


def test_rotation_keeps_old_codes_readable_then_reseals_under_the_new_key(redis_client, keys):
    # given two units sealed under the old key
    old_ledger = Ledger(redis_client, keys, CodeVault([OLD]))
    units = [fulfil(redis_client, keys, old_ledger, f"evt_rot{i}") for i in range(2)]
    before = [redis_client.hget(keys.unit(u), "codes") for u in units]

    # when the new key is put first: old codes still open, new ones are sealed with it
    rotating = Ledger(redis_client, keys, CodeVault([NEW, OLD]))
    readable = [rotating.reveal(u, actor="t", reason="r", now=NOW) for u in units]
    newer = fulfil(redis_client, keys, rotating, "evt_rot_new")
    done = rotating.rotate_codes()
    again = rotating.rotate_codes()

    # then the old ones were re-sealed in place, and the new key alone opens all three
    assert readable == [SealedCodes((CODE, PIN), (LINK,))] * 2
    assert (done.resealed, done.current, done.unreadable) == (2, 1, ())
    assert (again.resealed, again.current) == (0, 3)
    assert [redis_client.hget(keys.unit(u), "codes") for u in units] != before
    new_only = Ledger(redis_client, keys, CodeVault([NEW]))
    for unit_id in [*units, newer]:
        opened = new_only.reveal(unit_id, actor="t", reason="r", now=NOW)
        assert opened is not None and opened.codes == (CODE, PIN)
    with pytest.raises(CodeKeyError):
        Ledger(redis_client, keys, CodeVault([OLD])).reveal(units[0], actor="t", reason="r", now=1)


def test_rotation_with_a_wrong_key_set_lists_units_and_changes_nothing(redis_client, keys):
    unit_id = fulfil(redis_client, keys, Ledger(redis_client, keys, CodeVault([OLD])), "evt_w")
    before = redis_client.hget(keys.unit(unit_id), "codes")

    done = Ledger(redis_client, keys, CodeVault([STRANGER])).rotate_codes()

    assert (done.resealed, done.unreadable) == (0, (unit_id,))
    assert redis_client.hget(keys.unit(unit_id), "codes") == before


def test_rotation_seals_codes_an_older_release_stored_in_clear(redis_client, keys):
    # given a unit fulfilled by a release that stored codes and links in clear
    ledger = Ledger(redis_client, keys, CodeVault([NEW]))
    unit_id = fulfil(redis_client, keys, ledger, "evt_legacy")
    redis_client.hdel(keys.unit(unit_id), "codes_masked")
    redis_client.hset(
        keys.unit(unit_id), mapping={"codes": json.dumps([CODE, PIN]), "links": json.dumps([LINK])}
    )

    # when keys are rotated
    done = ledger.rotate_codes()

    # then the unit's codes are sealed, masked, and no clear value is left in its hash
    assert (done.sealed_plain, done.resealed, done.unreadable) == (1, 0, ())
    stored = redis_client.hgetall(keys.unit(unit_id))
    assert not [v for v in stored.values() if any(x.encode() in v for x in (CODE, PIN, LINK))]
    assert b"links" not in stored
    assert ledger.codes(unit_id) == ["****8899", "****7731"]
    opened = ledger.reveal(unit_id, actor="t", reason="r", now=NOW)
    assert opened == SealedCodes((CODE, PIN), (LINK,))


def test_rotate_keys_command(redis_client, keys, settings, monkeypatch, tmp_path, capsys):
    unit_id = fulfil(redis_client, keys, Ledger(redis_client, keys, CodeVault([OLD])), "evt_cmd")
    monkeypatch.setenv("RR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RR_KEY_PREFIX", keys.prefix)

    monkeypatch.setenv("CODE_KEYS", f"{NEW} {OLD}")
    rotated = main(["rotate-keys"])
    monkeypatch.setenv("CODE_KEYS", STRANGER)
    refused = main(["rotate-keys"])
    monkeypatch.setenv("CODE_KEYS", "not-a-key")
    invalid = main(["rotate-keys"])

    out, err = capsys.readouterr()
    assert (
        rotated == 0 and "re-sealed 1, already current 0, sealed from clear 0, unreadable 0" in out
    )
    assert refused == 1 and f"no key in CODE_KEYS opens: {unit_id}" in out
    assert invalid == 2 and "rewardrelay: invalid setting CODE_KEYS: key #1" in err
    assert CodeVault([NEW]).open(redis_client.hget(keys.unit(unit_id), "codes").decode())


@pytest.mark.parametrize("value", ["abc", f"{OLD} whsec_abc", OLD[:-2] + "=="])
def test_malformed_code_keys_are_refused_at_start_up(value):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CODE_KEYS": value})
    assert caught.value.variable == "CODE_KEYS"
    assert "Fernet key" in str(caught.value) and "\n" not in str(caught.value)


def test_code_keys_are_redacted():
    settings = Settings.from_env({"CODE_KEYS": f"{OLD} {NEW}"})
    assert settings.code_keys == (OLD, NEW)
    assert OLD not in repr(settings) and settings.redacted()["CODE_KEYS"] == ["***", "***"]
