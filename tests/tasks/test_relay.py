"""Dispatcher: outbox relay, reclaim after a crash or outage, and the due-unit scheduler.

The broker is replaced by a fake ``publish`` callable that records unit ids, or raises
the way a broker outage does; the store is the real Redis. ``celery_publisher`` itself is
tested against a real Celery app on the real Redis at the end.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest
import redis

from tasks.relay import RELAY_GROUP, Dispatcher, celery_publisher
from worker.celery_app import FULFIL_TASK, make_celery
from worker.stores.inbox import Inbox, InboxOutcome
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, BeginDecision, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState

NOW = 1_800_000_000.0
ACCEPT_STALE = 45.0  # the edge's stale_after: when an accepted unit first becomes due
DISPATCH_STALE = 30.0  # the dispatcher's: how far a published unit's score is pushed


class BrokerDown(ConnectionError):
    """What kombu raises when the broker is unreachable (a ConnectionError)."""


class FakePublish:
    """Records published unit ids, batch by batch.

    ``down``: every batch fails before publishing anything. ``fail_after``: the first
    batch publishes that many units and then fails, the way a transport without batching
    (RabbitMQ) can fail part-way through.
    """

    def __init__(self, *, down: bool = False, fail_after: int | None = None) -> None:
        self.published: list[str] = []
        self.batches: list[list[str]] = []
        self.down = down
        self.fail_after = fail_after
        self._lock = threading.Lock()

    def __call__(self, unit_ids: Sequence[str]) -> None:
        with self._lock:
            if self.down:
                raise BrokerDown("broker unreachable")
            if self.fail_after is not None:
                self.published += unit_ids[: self.fail_after]
                self.fail_after = None
                raise BrokerDown("connection lost mid-batch")
            self.batches.append(list(unit_ids))
            self.published += unit_ids


@pytest.fixture
def keys(key_prefix) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def inbox(redis_client, keys) -> Inbox:
    return Inbox(redis_client, keys)


def accept(inbox: Inbox, event_id: str, units: int) -> list[str]:
    outcome = inbox.accept(
        event_id=event_id,
        source="internal",
        event_type="reward.granted",
        fingerprint=f"fp-{event_id}",
        body="{}",
        units=[UnitSpec(line=0, index=i) for i in range(units)],
        now=NOW,
        stale_after=ACCEPT_STALE,
    )
    assert outcome is InboxOutcome.ACCEPTED
    return [f"{event_id}:0:{i}" for i in range(units)]


def redeliver(inbox: Inbox, event_id: str, units: int) -> InboxOutcome:
    return inbox.accept(
        event_id=event_id,
        source="internal",
        event_type="reward.granted",
        fingerprint=f"fp-{event_id}",
        body="{}",
        units=[UnitSpec(line=0, index=i) for i in range(units)],
        now=NOW,
        stale_after=ACCEPT_STALE,
    )


def dispatcher(redis_client, keys, publish, consumer: str = "relay-1") -> Dispatcher:
    return Dispatcher(redis_client, keys, publish, stale_after=DISPATCH_STALE, consumer=consumer)


def pending_count(redis_client, keys) -> int:
    return int(redis_client.xpending(keys.outbox, RELAY_GROUP)["pending"])


def test_relay_publishes_each_entry_once_then_acks_and_deletes_it(inbox, redis_client, keys):
    # given an accepted event with three units and a relay
    unit_ids = accept(inbox, "evt_r", 3)
    publish = FakePublish()
    relay = dispatcher(redis_client, keys, publish)
    relay.ensure_group()
    relay.ensure_group()  # idempotent: a restarted relay finds the group
    # when the relay runs twice
    first = relay.relay_once(block_ms=10)
    second = relay.relay_once(block_ms=10)
    # then every unit was published exactly once, in order
    assert (first, second) == (3, 0)
    assert publish.published == unit_ids
    # and the outbox is empty with nothing pending
    assert redis_client.xlen(keys.outbox) == 0
    assert pending_count(redis_client, keys) == 0
    # and every unit is marked dispatched, so a redelivery is a plain duplicate
    for uid in unit_ids:
        assert redis_client.hexists(keys.unit(uid), "dispatched_at")
    assert redeliver(inbox, "evt_r", 3) is InboxOutcome.DUPLICATE


def test_broker_outage_leaves_entries_pending_until_reclaimed(inbox, redis_client, keys):
    # given an accepted event and a relay whose broker is down
    unit_ids = accept(inbox, "evt_o", 3)
    publish = FakePublish(down=True)
    relay = dispatcher(redis_client, keys, publish)
    relay.ensure_group()
    # when the relay reads the outbox
    with pytest.raises(BrokerDown):
        relay.relay_once(block_ms=10)
    # then nothing was published, acknowledged or marked dispatched
    assert publish.published == []
    assert redis_client.xlen(keys.outbox) == 3
    assert pending_count(redis_client, keys) == 3
    assert redeliver(inbox, "evt_o", 3) is InboxOutcome.PENDING
    # and a plain read does not see the entries again (they are pending, not new)
    publish.down = False
    assert relay.relay_once(block_ms=10) == 0
    # when the broker is back and the entries are reclaimed
    reclaimed = relay.reclaim_outbox(min_idle_ms=0)
    # then each unit is published once and the outbox is drained
    assert reclaimed == 3
    assert publish.published == unit_ids
    assert redis_client.xlen(keys.outbox) == 0
    assert pending_count(redis_client, keys) == 0
    assert redeliver(inbox, "evt_o", 3) is InboxOutcome.DUPLICATE


def test_relay_publishes_what_it_read_as_one_batch(inbox, redis_client, keys):
    # given two accepted events with five units in all
    unit_ids = accept(inbox, "evt_b1", 2) + accept(inbox, "evt_b2", 3)
    publish = FakePublish()
    relay = dispatcher(redis_client, keys, publish)
    relay.ensure_group()
    # when the relay reads them in one go
    assert relay.relay_once(block_ms=10) == 5
    # then they were handed to the broker in one batch, in outbox order
    assert publish.batches == [unit_ids]


def test_failure_mid_batch_leaves_the_whole_batch_to_be_published_again(inbox, redis_client, keys):
    # given a broker connection that fails after two of four publishes
    unit_ids = accept(inbox, "evt_m", 4)
    publish = FakePublish(fail_after=2)
    relay = dispatcher(redis_client, keys, publish)
    relay.ensure_group()
    # when the relay runs and fails
    with pytest.raises(BrokerDown):
        relay.relay_once(block_ms=10)
    # then nothing is settled: whether the batch got through is not known
    assert pending_count(redis_client, keys) == 4
    assert not any(redis_client.hexists(keys.unit(uid), "dispatched_at") for uid in unit_ids)
    # when another relay reclaims what was left
    other = dispatcher(redis_client, keys, publish, consumer="relay-2")
    reclaimed = other.reclaim_outbox(min_idle_ms=0)
    # then every unit was published at least once (twice is harmless: the ledger lets one
    # delivery submit) and the outbox is drained
    assert reclaimed == 4
    assert Counter(publish.published) == Counter(unit_ids[:2] * 2 + unit_ids[2:])
    assert redis_client.xlen(keys.outbox) == 0
    assert all(redis_client.hexists(keys.unit(uid), "dispatched_at") for uid in unit_ids)


def test_reclaim_leaves_entries_another_relay_is_still_working_on(inbox, redis_client, keys):
    # given entries a relay read a moment ago and has not acknowledged yet
    accept(inbox, "evt_busy", 2)
    relay = dispatcher(redis_client, keys, FakePublish(down=True))
    relay.ensure_group()
    with pytest.raises(BrokerDown):
        relay.relay_once(block_ms=10)
    publish = FakePublish()
    # when a sweeper reclaims with the usual idle threshold
    reclaimed = dispatcher(redis_client, keys, publish, consumer="sweeper").reclaim_outbox(
        min_idle_ms=60_000
    )
    # then it does not steal them
    assert reclaimed == 0
    assert publish.published == []
    assert pending_count(redis_client, keys) == 2


def test_two_relays_share_the_outbox_without_double_publishing(inbox, redis_client, keys):
    # given 60 units and two relays reading in small batches concurrently
    unit_ids = accept(inbox, "evt_two", 60)
    publish = FakePublish()
    relays = [dispatcher(redis_client, keys, publish, consumer=f"relay-{n}") for n in (1, 2)]
    relays[0].ensure_group()
    barrier = threading.Barrier(2)

    def run(relay: Dispatcher) -> None:
        barrier.wait()
        while relay.relay_once(block_ms=10, count=5):
            pass

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # then
    assert Counter(publish.published) == Counter(unit_ids)
    assert redis_client.xlen(keys.outbox) == 0


def test_publish_due_publishes_due_units_once_and_pushes_them_forward(inbox, redis_client, keys):
    # given three accepted units, due ACCEPT_STALE after acceptance
    unit_ids = accept(inbox, "evt_due", 3)
    publish = FakePublish()
    scheduler = dispatcher(redis_client, keys, publish)
    # when the scheduler sweeps before they are due
    early = scheduler.publish_due(now=NOW + ACCEPT_STALE - 1)
    # then nothing is published
    assert (early, publish.published) == (0, [])
    # when it sweeps twice once they are due
    due_at = NOW + ACCEPT_STALE
    first = scheduler.publish_due(now=due_at)
    second = scheduler.publish_due(now=due_at)
    # then each unit is published once and rescheduled DISPATCH_STALE later
    assert (first, second) == (3, 0)
    assert sorted(publish.published) == unit_ids
    for uid in unit_ids:
        assert redis_client.zscore(keys.live, uid) == due_at + DISPATCH_STALE
        assert redis_client.hexists(keys.unit(uid), "dispatched_at")
    # and they come back if still not settled after that
    assert scheduler.publish_due(now=due_at + DISPATCH_STALE) == 3


def test_publish_due_honours_the_limit(inbox, redis_client, keys):
    # given five due units
    accept(inbox, "evt_lim", 5)
    publish = FakePublish()
    scheduler = dispatcher(redis_client, keys, publish)
    # when
    taken = scheduler.publish_due(now=NOW + ACCEPT_STALE, limit=2)
    # then only two are published, the rest stay due
    assert taken == 2
    assert scheduler.publish_due(now=NOW + ACCEPT_STALE, limit=100) == 3
    assert len(set(publish.published)) == 5


def test_publish_due_skips_units_that_left_the_live_set(inbox, redis_client, keys):
    # given two units, one of which was fulfilled
    unit_ids = accept(inbox, "evt_done", 2)
    ledger = Ledger(redis_client, keys)
    begun = ledger.begin(unit_ids[0], now=NOW, lease_seconds=1.0)
    ledger.finish(
        unit_ids[0],
        begun.attempt,
        UnitState.FULFILLED,
        AttemptRecord(
            attempt=begun.attempt,
            at=NOW,
            mode=BeginDecision.SUBMIT,
            outcome=AttemptOutcome.FULFILLED,
        ),
        now=NOW,
        next_check_at=None,
    )
    publish = FakePublish()
    # when everything is long overdue
    published = dispatcher(redis_client, keys, publish).publish_due(now=NOW + 10_000)
    # then only the unsettled unit is published
    assert published == 1
    assert publish.published == [unit_ids[1]]
    assert redis_client.zscore(keys.live, unit_ids[0]) is None


def test_publish_due_during_outage_retries_after_stale_interval(inbox, redis_client, keys):
    # given due units and a broker that is down
    unit_ids = accept(inbox, "evt_out", 2)
    publish = FakePublish(down=True)
    scheduler = dispatcher(redis_client, keys, publish)
    due_at = NOW + ACCEPT_STALE
    # when the scheduler sweeps
    published = scheduler.publish_due(now=due_at)
    # then it stops without raising, and nothing is marked dispatched
    assert published == 0
    assert not any(redis_client.hexists(keys.unit(uid), "dispatched_at") for uid in unit_ids)
    # when the broker is back and the stale interval passed
    publish.down = False
    assert scheduler.publish_due(now=due_at + 1) == 0
    republished = scheduler.publish_due(now=due_at + DISPATCH_STALE)
    # then every unit is published
    assert republished == 2
    assert sorted(publish.published) == unit_ids


def test_racing_schedulers_publish_each_due_unit_once(inbox, redis_client, keys):
    # given 40 due units and two schedulers sweeping the same instant concurrently
    unit_ids = accept(inbox, "evt_race", 40)
    publish = FakePublish()
    schedulers = [dispatcher(redis_client, keys, publish, consumer=f"beat-{n}") for n in (1, 2)]
    barrier = threading.Barrier(2)
    due_at = NOW + ACCEPT_STALE

    def sweep(scheduler: Dispatcher) -> None:
        barrier.wait()
        while scheduler.publish_due(now=due_at, limit=3):
            pass

    threads = [threading.Thread(target=sweep, args=(s,)) for s in schedulers]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # then each unit was published exactly once in total
    assert Counter(publish.published) == Counter(unit_ids)


# --- celery_publisher against a real Celery app on the real Redis ----------------------

BROKER_DB = 15  # the worker/broker tests' database


@pytest.fixture
def broker_queue(settings) -> Iterator[tuple[object, redis.Redis, str]]:
    """A Celery app publishing to a queue of this test's own, and a client to read it."""
    queue = f"rrtest-q-{uuid.uuid4().hex[:8]}"
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    app = make_celery(replace(settings, broker_url=url, task_queue=queue))
    client = redis.Redis.from_url(url)
    yield app, client, queue
    # The queue, and kombu's binding keys for it (``_kombu.binding*.{queue}``).
    client.delete(queue, *client.scan_iter(match=f"_kombu.binding*.{queue}", count=1000))
    client.close()
    app.close()


def _queued_tasks(client: redis.Redis, queue: str) -> list[tuple[str, list[str]]]:
    """(task name, args) of every message in the queue, oldest first."""
    tasks = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # LPUSH: newest first
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        # what Flower shows of the arguments: the unit id and nothing else
        assert message["headers"]["argsrepr"] == repr(args)
        tasks.append((message["headers"]["task"], args))
    return tasks


def test_celery_publisher_puts_one_task_per_unit_on_the_queue(broker_queue):
    # given a publisher on a real Celery app
    app, client, queue = broker_queue
    publish = celery_publisher(app)
    unit_ids = [f"evt_p{n}:0:0" for n in range(30)]
    # when it publishes a batch, and then an empty one
    publish(unit_ids)
    publish([])
    # then the queue holds one fulfilment task per unit, in order, carrying only its id
    assert _queued_tasks(client, queue) == [(FULFIL_TASK, [uid]) for uid in unit_ids]


def test_celery_publisher_on_redis_publishes_nothing_from_a_batch_that_fails(broker_queue):
    # given a batch whose third message cannot be serialised
    app, client, queue = broker_queue
    publish = celery_publisher(app)
    batch: list = ["evt_f1:0:0", "evt_f2:0:0", object(), "evt_f4:0:0"]
    # when it is published
    with pytest.raises(Exception):  # noqa: B017 - kombu's EncodeError, whatever wraps it
        publish(batch)
    # then none of it reached the queue: the buffered messages were discarded, so the
    # caller's "treat the whole batch as unpublished" is exact on Redis
    assert client.llen(queue) == 0
    # and the publisher still works afterwards
    publish(["evt_f5:0:0"])
    assert _queued_tasks(client, queue) == [(FULFIL_TASK, ["evt_f5:0:0"])]
