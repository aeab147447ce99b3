"""The relay publishes outbox entries to the broker and rides out a Redis outage."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import replace

import redis

from rewardrelay.embedded import EmbeddedRedis
from tasks.relay import run_relay
from worker.config import Settings
from worker.stores.keys import Keys

PREFIX = "rrtest"


def _published_units(client: redis.Redis, timeout: float = 10.0, want: int = 1) -> list[str]:
    deadline = time.monotonic() + timeout
    while client.llen("celery") < want and time.monotonic() < deadline:
        time.sleep(0.05)
    units = []
    for raw in client.lrange("celery", 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "tasks.fulfill_reward"
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        units.append(args[0])
    return units


def test_publishes_outbox_entries_and_survives_a_redis_restart(tmp_path):
    # given
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    settings = replace(Settings(), redis_url=url, key_prefix=PREFIX)
    keys = Keys(PREFIX)
    client = redis.Redis.from_url(url)
    stop = threading.Event()
    relay = threading.Thread(target=run_relay, args=(settings, stop), kwargs={"block_ms": 100})
    relay.start()
    try:
        client.xadd(keys.outbox, {"unit": "evt_1:0:0"})

        # when
        first = _published_units(client)
        server.stop()
        time.sleep(1.5)  # the relay sees the outage and backs off
        server = EmbeddedRedis(tmp_path, port=server.port)
        server.start()
        client = redis.Redis.from_url(url)
        client.xadd(keys.outbox, {"unit": "evt_2:0:0"})
        second = _published_units(client, want=2)
        # the relay settles (acknowledges and deletes) an entry just after publishing it
        deadline = time.monotonic() + 5
        while client.xlen(keys.outbox) and time.monotonic() < deadline:
            time.sleep(0.05)

        # then
        assert first == ["evt_1:0:0"]
        assert second == ["evt_2:0:0", "evt_1:0:0"]
        assert client.xlen(keys.outbox) == 0
        assert relay.is_alive()
    finally:
        stop.set()
        relay.join(timeout=10)
        client.close()
        server.stop()
    assert not relay.is_alive()
