"""End to end, data lifecycle: real edge over HTTP, relay, Celery worker and beat, sandboxes.

Retention: a fulfilled event is closed by the beat's retention task and, with a
one-second ``RETENTION_SECONDS``, expires; the fulfilment view answers 410, a redelivery
200 duplicate, and only a small marker is left. Erasure: ``POST /erasures`` after a
reward was fulfilled leaves the address in no Redis value of any type and in no log line
of the worker, beat or edge; the reward itself was issued once and stays issued.
"""

from __future__ import annotations

import logging
import time

import pytest

from tasks.providers.adapters import provider_key
from tests.conftest import TEST_ADMIN_TOKEN
from tests.integration.conftest import Stack, coniq_reward, internal_grant
from tests.lifecycle_checks import traces_of
from worker.stores.retention import stored_bytes

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
MARKER_BYTES_MAX = 200


def wait_for(predicate, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen after {timeout}s\n{stack.worker_logs()[-4000:]}")


def test_a_fulfilled_event_expires_and_its_redelivery_is_still_a_duplicate(
    make_stack, ifeelgoods
) -> None:
    # given a stack whose finished events are kept one second, with beat running
    stack: Stack = make_stack({"RETENTION_SECONDS": "1", "DEDUPE_RETENTION_SECONDS": "120"})
    stack.start_beat()
    event = coniq_reward(offer_id="1001")
    # when a reward is fulfilled
    assert stack.send(event).status_code == 202
    [unit] = stack.wait_terminal(event["id"])["units"]
    assert unit["state"] == "fulfilled"
    # then the retention task closes it and Redis expires it: the view answers 410
    url = f"{stack.edge_url}/fulfillments/{event['id']}"
    wait_for(lambda: stack.http.get(url, headers=ADMIN).status_code == 410, 30, "410", stack)
    # and only the dedupe marker is left of it, small
    left = [
        key.decode()
        for key in stack.redis.scan_iter(match=f"{stack.prefix}:*")
        if event["id"].encode() in key
    ]
    assert left == [stack.keys.seen(event["id"])]
    assert stored_bytes(stack.redis, left) <= MARKER_BYTES_MAX
    # and a redelivery is answered duplicate: no second reward, nothing stored again
    again = stack.send(event)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    time.sleep(1.0)
    assert ifeelgoods.issued(provider_key(unit["id"])) == 1
    assert not stack.redis.exists(stack.keys.event(event["id"]))


def test_erasure_after_fulfilment_leaves_no_trace_in_redis_or_logs(
    make_stack, rewardops, caplog
) -> None:
    # given a stack with beat running, and Grace's reward fulfilled
    caplog.set_level(logging.DEBUG)
    stack: Stack = make_stack()
    stack.start_beat()
    event = internal_grant([{"reward_code": "VOUCHER25", "quantity": 1}])
    assert stack.send(event, source="internal").status_code == 202
    [unit] = stack.wait_terminal(event["id"])["units"]
    assert unit["state"] == "fulfilled"
    address = event["data"]["recipient"]["email"]
    assert traces_of(stack.redis, stack.prefix, address)
    # when her erasure is asked for over the admin API
    response = stack.http.post(
        f"{stack.edge_url}/erasures", json={"email": address.upper()}, headers=ADMIN
    )
    # then it answers what it erased
    assert response.status_code == 200, response.text
    assert response.json()["events"] == 1
    time.sleep(1.5)  # a beat run or two after the erasure
    # and the address is in no Redis value of any type under the prefix
    assert traces_of(stack.redis, stack.prefix, address) == []
    # nor in any log line: worker, beat (files) and the edge (this process)
    assert address not in stack.worker_logs().casefold()
    assert address not in caplog.text.casefold()
    # and the unit keeps its state and reference; a redelivery is a duplicate
    [kept] = stack.fulfillment(event["id"])["units"]
    assert kept["state"] == "fulfilled" and kept["provider_ref"] == unit["provider_ref"]
    assert stack.send(event, source="internal").json()["status"] == "duplicate"
    assert rewardops.issued(provider_key(unit["id"])) == 1
