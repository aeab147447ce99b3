"""Our kombu Redis transport: one publishing client per channel, messages as before.

Against the real Redis (database 15, a queue of the test's own, deleted afterwards).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from tests.conftest import redis_url
from worker import redis_transport
from worker.celery_app import FULFIL_TASK, REDIS_TRANSPORT, make_celery
from worker.config import Settings

BROKER_DB = 15


@pytest.fixture
def queue(redis_available: None) -> Iterator[str]:
    name = f"rrtest-transport-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url(BROKER_DB))
    for pattern in (name, f"{name}\x06*", f"_kombu.binding*{name}*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    client.close()


@pytest.fixture
def built_clients(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``redis.Redis`` a kombu channel builds for plain calls (a spy, not a stand-in)."""
    built: list[Any] = []
    original = redis_transport.Channel._create_client

    def spy(self: Any, asynchronous: bool = False) -> Any:
        client = original(self, asynchronous=asynchronous)
        if not asynchronous:
            built.append(client)
        return client

    monkeypatch.setattr(redis_transport.Channel, "_create_client", spy)
    return built


def test_make_celery_selects_our_transport_for_a_redis_broker() -> None:
    # given / when
    app = make_celery(replace(Settings(), redis_url="redis://127.0.0.1:6379/15"))
    amqp = make_celery(replace(Settings(), broker_url="amqp://guest@127.0.0.1:5672//"))
    # then
    assert app.conf.broker_transport == REDIS_TRANSPORT
    assert app.conf.broker_transport_options["max_connections"] > app.conf.worker_concurrency
    assert amqp.conf.broker_transport is None


def test_many_plain_publishes_from_many_threads_share_one_client_and_all_arrive(
    queue: str, built_clients: list[Any]
) -> None:
    # given a Celery app on our transport, publishing without batching
    settings = replace(Settings(), redis_url=redis_url(BROKER_DB), task_queue=queue)
    app = make_celery(settings)
    sent = [f"evt_{n}:0:0" for n in range(120)]

    def publish(unit_ids: list[str]) -> None:
        for unit_id in unit_ids:
            app.send_task(FULFIL_TASK, args=[unit_id])

    # when 4 threads publish 30 tasks each (each publish also sends a task-sent event)
    threads = [threading.Thread(target=publish, args=(sent[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then every message is in the queue, and the channels built one client each
    client = redis.Redis.from_url(redis_url(BROKER_DB))
    bodies = client.lrange(queue, 0, -1)
    client.close()
    app.close()
    received = [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in bodies]
    assert sorted(received) == sorted(sent)
    assert 0 < len(built_clients) <= 4  # one per channel (≤ one per producer), not 240


def test_a_replaced_pool_gets_a_client_of_its_own(queue: str, built_clients: list[Any]) -> None:
    # given a channel that has published once
    settings = replace(Settings(), redis_url=redis_url(BROKER_DB), task_queue=queue)
    app = make_celery(settings)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        app.send_task(FULFIL_TASK, args=["evt_a:0:0"], connection=connection)
        first = channel._shared_client
        # when kombu replaces the pool (after a fork or a reconnect)
        channel._disconnect_pools()
        app.send_task(FULFIL_TASK, args=["evt_b:0:0"], connection=connection)
        # then the next publish uses a client over the new pool, and it works
        assert channel._shared_client is not first
        assert channel._shared_client.connection_pool is channel.pool
    client = redis.Redis.from_url(redis_url(BROKER_DB))
    assert client.llen(queue) == 2
    client.close()
    app.close()
    assert len(built_clients) == 2
