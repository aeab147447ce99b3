"""RefusedItems against real Redis: list, retry and discard what the sources hold."""

from __future__ import annotations

import json

import pytest

from tasks.sources.common import SourceKeys
from tasks.sources.coniq_outbound import OutboundKeys
from worker.stores.keys import Keys
from worker.stores.refused import HoldKind, RefusedItems, hold_value

NOW = 1_795_000_000.0


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def store(redis_client, keys) -> RefusedItems:
    return RefusedItems(redis_client, keys)


@pytest.fixture
def held(redis_client, keys) -> dict[str, str]:
    """One item of each kind, written as the sources write them (one by an older release)."""
    ignico, orders = SourceKeys(keys, "ignico"), SourceKeys(keys, "orders-platform")
    coniq = OutboundKeys(keys, "coniq-outbound")
    redis_client.hset(ignico.rejected, "ignico-payout-7", hold_value("validation-failed", NOW))
    redis_client.hset(ignico.failed, "8", hold_value("transaction not found", NOW + 1))
    redis_client.hset(orders.rejected, "orders-platform-order-3", "no-recipient")  # older
    redis_client.hset(coniq.failed, "evt_c:0:0", hold_value("conflict", NOW + 2))
    return {"payout": "ignico-payout-7", "settle": "8", "order": "orders-platform-order-3"}


def test_listing_shows_id_kind_reason_and_time_oldest_first(store, held):
    # given one item of each kind
    # when
    ignico = [item.to_dict() for item in store.held("ignico")]
    orders = store.held("orders-platform")
    # then
    assert ignico == [
        {"source": "ignico", "id": "ignico-payout-7", "kind": "refused",
         "reason": "validation-failed", "at": NOW},
        {"source": "ignico", "id": "8", "kind": "settle-failed",
         "reason": "transaction not found", "at": NOW + 1},
    ]  # fmt: skip
    # and an older release's bare reason reads with no time
    assert [(i.id, i.reason, i.at) for i in orders] == [
        ("orders-platform-order-3", "no-recipient", None)
    ]
    assert [i.kind for i in store.iter_all()] == [
        HoldKind.REFUSED,
        HoldKind.SETTLE_FAILED,
        HoldKind.REFUSED,
        HoldKind.RECORD_FAILED,
    ]


def test_retrying_a_refused_payout_queues_it_for_the_next_poll(store, held, redis_client, keys):
    # when
    moved = store.retry("ignico", held["payout"], now=NOW + 10, actor="api")
    # then it left the held items for the retry set
    assert moved is not None and moved.kind is HoldKind.REFUSED
    names = SourceKeys(keys, "ignico")
    assert not redis_client.hexists(names.rejected, held["payout"])
    assert redis_client.sismember(names.retry, held["payout"])
    # and a second retry finds nothing (it moves once)
    assert store.retry("ignico", held["payout"], now=NOW + 11, actor="api") is None


def test_retrying_a_failed_settlement_puts_the_payout_back_to_settle(
    store, held, redis_client, keys
):
    # when
    moved = store.retry("ignico", held["settle"], now=NOW + 10, actor="api")
    # then
    assert moved is not None and moved.kind is HoldKind.SETTLE_FAILED
    names = SourceKeys(keys, "ignico")
    assert redis_client.hget(names.unsettled, "ignico-payout-8") == b"8"
    assert not redis_client.hexists(names.failed, "8")


def test_retrying_a_failed_coniq_record_puts_the_unit_back_to_record(
    store, held, redis_client, keys
):
    # when
    store.retry("coniq-outbound", "evt_c:0:0", now=NOW + 10, actor="api")
    # then
    names = OutboundKeys(keys, "coniq-outbound")
    assert redis_client.sismember(names.pending, "evt_c:0:0")
    assert store.held("coniq-outbound") == []


def test_discarding_a_refused_item_keeps_it_out_of_later_polls_and_is_audited(
    store, held, redis_client, keys
):
    # when
    moved = store.discard(
        "orders-platform", held["order"], now=NOW + 20, actor="console", reason="test order"
    )
    # then it is no longer held, is remembered as discarded, and the audit log says who/why
    assert moved is not None and store.held("orders-platform") == []
    names = SourceKeys(keys, "orders-platform")
    kept = json.loads(redis_client.hget(names.discarded, held["order"]))
    assert kept == {"reason": "test order", "at": NOW + 20}
    assert not redis_client.sismember(names.retry, held["order"])
    assert store.audit_log()[-1] == {
        "action": "discard", "source": "orders-platform", "kind": "refused",
        "id": held["order"], "at": NOW + 20, "actor": "console", "reason": "test order",
    }  # fmt: skip


def test_discarding_a_failed_settlement_drops_it(store, held, redis_client, keys):
    # when
    store.discard("ignico", held["settle"], now=NOW, actor="api")
    # then
    names = SourceKeys(keys, "ignico")
    assert not redis_client.hexists(names.failed, held["settle"])
    assert not redis_client.hexists(names.unsettled, "ignico-payout-8")
    assert [i.id for i in store.held("ignico")] == [held["payout"]]


def test_an_unknown_item_is_neither_retried_nor_discarded(store, held):
    # when / then
    assert store.retry("ignico", "ignico-payout-404", now=NOW, actor="api") is None
    assert store.discard("coniq-outbound", held["payout"], now=NOW, actor="api") is None
    assert store.audit_log() == []
