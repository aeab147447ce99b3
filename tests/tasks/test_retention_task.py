"""The retention beat run: closing what the ledger queued, re-queueing events from before
retention, and keeping the sources' bookkeeping bounded (real Redis)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from decimal import Decimal

import pytest

from tasks.bookkeeping import prune
from tasks.retention import run_retention
from tasks.runtime import build_runtime
from tasks.sources.clients.orders_platform import PlatformOrder
from tasks.sources.common import SourceKeys, event_outcome
from tasks.sources.coniq_outbound import SOURCE as CONIQ_OUTBOUND
from tasks.sources.coniq_outbound import OutboundKeys
from tasks.sources.orders_platform import event_id_for, qualifies
from worker.config import Settings, SettingsError
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.models import UnitSpec


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


def accept(redis_client, keys: Keys, event_id: str, units: int = 1) -> None:
    Inbox(redis_client, keys).accept(
        event_id=event_id,
        source="internal",
        event_type="reward.granted",
        fingerprint="f" * 64,
        body="{}",
        units=[UnitSpec(line=0, index=i) for i in range(units)],
        now=time.time(),
        stale_after=45.0,
    )


def fulfilled_by_hand(redis_client, keys: Keys, unit_id: str) -> None:
    """A unit finished before retention existed: its state says so, nothing queued it."""
    redis_client.hset(keys.unit(unit_id), "state", "fulfilled")


def test_a_run_closes_queued_events_and_those_from_before_retention(settings, redis_client, keys):
    # given an event finished before retention existed (in the index, never queued)
    accept(redis_client, keys, "evt_old")
    fulfilled_by_hand(redis_client, keys, "evt_old:0:0")
    redis_client.delete(keys.closing)
    rt = build_runtime(replace(settings, retention_seconds=50))
    # when two runs go by (the first re-queues it, the second closes it)
    first = run_retention(rt)
    second = run_retention(rt)
    # then it is closed: it expires, and the marker exists
    assert first["requeued"] == 1
    assert second["closed"] == {"fulfilled": 1}
    assert 0 < redis_client.ttl(keys.event("evt_old")) <= 50
    assert redis_client.exists(keys.seen("evt_old"))


def test_an_emitted_order_is_forgotten_only_once_its_event_and_marker_are_gone(redis_client, keys):
    # given three emitted orders: one with its event, one with only a marker, one gone
    names = SourceKeys(keys, "orders-platform")
    redis_client.sadd(names.emitted, "1", "2", "3", "4")
    accept(redis_client, keys, event_id_for("1"))
    redis_client.set(keys.seen(event_id_for("2")), "internal abc f")
    redis_client.hset(names.rejected, event_id_for("4"), "no-recipient")
    # when
    pruned = prune(redis_client, keys)
    # then only the order whose event and marker are both gone (and not rejected) goes
    assert pruned == {"orders_emitted": 1}
    assert redis_client.smembers(names.emitted) == {b"1", b"2", b"4"}


def test_loop_back_records_go_with_their_units(redis_client, keys):
    # given a done record of a live unit and one of an expired unit
    outbound = OutboundKeys(keys, CONIQ_OUTBOUND)
    accept(redis_client, keys, "evt_live")
    redis_client.hset(outbound.recorded, mapping={"evt_live:0:0": "rec-1", "evt_gone:0:0": "r2"})
    # when
    pruned = prune(redis_client, keys)
    # then
    assert pruned == {"coniq_recorded": 1}
    assert redis_client.hkeys(outbound.recorded) == [b"evt_live:0:0"]


def test_an_order_older_than_the_dedupe_horizon_never_qualifies():
    settings = replace(Settings(), dedupe_retention_seconds=86_400)
    old = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 2 * 86_400))
    new = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 3_600))

    def order(created_at: str) -> PlatformOrder:
        return PlatformOrder(
            id="7",
            status="paid",
            total=Decimal("80"),
            currency="EUR",
            email="a@b.c",
            first_name="",
            last_name="",
            created_at=created_at,
            updated_at=created_at,
        )

    assert qualifies(order(new), settings)
    assert not qualifies(order(old), settings)


@pytest.mark.parametrize(
    ("marker", "status"),
    [("internal abc f", "fulfilled"), ("internal abc d", "discarded"), (None, "open")],
)
def test_an_expired_events_outcome_comes_from_its_marker(redis_client, keys, marker, status):
    # given an event whose data expired (only a marker, or nothing)
    if marker:
        redis_client.set(keys.seen("evt_x"), marker)
    # when / then (Ignico settles payouts of expired events from this)
    assert event_outcome(redis_client, keys, "evt_x").status == status


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"RETENTION_SECONDS": "0"}, "RETENTION_SECONDS"),
        ({"RETENTION_SECONDS": "ten"}, "RETENTION_SECONDS"),
        ({"RETENTION_SECONDS": "100", "DEDUPE_RETENTION_SECONDS": "99"}, "DEDUPE_RETENTION"),
        ({"ERASURE_KEY": "short"}, "ERASURE_KEY"),
    ],
)
def test_bad_lifecycle_settings_are_refused_naming_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_lifecycle_settings_default_to_30_and_400_days():
    settings = Settings.from_env({"ERASURE_KEY": "k" * 32})
    assert settings.retention_seconds == 30 * 86_400
    assert settings.dedupe_retention_seconds == 400 * 86_400
    assert "k" * 32 not in repr(settings)
    assert json.dumps(settings.redacted()["ERASURE_KEY"]) == '"***"'
