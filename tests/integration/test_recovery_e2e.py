"""No loss at the edge: an event stored but never published is recovered by beat's sweep.

The edge's one atomic write puts the event and its units in the outbox stream; a relay
publishes them. Here no relay survives: one reads the entry and dies without
acknowledging it. A real ``celery beat`` process schedules ``tasks.sweep`` on a real
worker, which claims the orphaned entry and the silent unit and fulfils it once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tasks.providers.adapters import provider_key
from tasks.relay import RELAY_GROUP
from tests.integration.conftest import Stack, coniq_reward

pytestmark = pytest.mark.integration


def test_event_whose_relay_died_before_publishing_is_fulfilled_by_the_beat_sweep(
    make_stack: Any, ifeelgoods
) -> None:
    # given an accepted event and a relay that read its outbox entry, then died unacked
    stack: Stack = make_stack(
        {"UNIT_STALE_SECONDS": "2", "SWEEP_INTERVAL_SECONDS": "1"}, worker=False, relay=False
    )
    event = coniq_reward()
    assert stack.send(event).status_code == 202
    stack.redis.xgroup_create(stack.keys.outbox, RELAY_GROUP, id="0", mkstream=True)
    read: Any = stack.redis.xreadgroup(RELAY_GROUP, "relay-that-dies", {stack.keys.outbox: ">"})
    assert len(read[0][1]) == 1

    # when the sender redelivers before anything was published
    redelivery = stack.send(event)

    # then it is accepted again, not answered "duplicate": it was never enqueued
    assert redelivery.status_code == 202
    assert redelivery.json()["status"] == "accepted"

    # when beat and a worker run (no relay at all)
    started = time.time()
    stack.start_worker()
    stack.start_beat()
    view = stack.wait_terminal(event["id"], timeout=60)
    elapsed = time.time() - started

    # then the sweep published it within the 60 s promise, and it was issued once
    assert view["units"][0]["state"] == "fulfilled"
    assert elapsed < 60
    assert ifeelgoods.issued(provider_key(view["units"][0]["id"])) == 1
    assert stack.redis.xpending(stack.keys.outbox, RELAY_GROUP)["pending"] == 0
    # and once published, a redelivery is a duplicate
    assert stack.send(event).status_code == 200
