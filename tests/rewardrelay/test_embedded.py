"""The embedded Redis is the real redis-server binary, with an AOF in the data directory."""

from __future__ import annotations

import os
import socket

import pytest
import redis

from rewardrelay.embedded import EmbeddedRedis, EmbeddedRedisError, port_open, redis_executable


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); /proc tells us whether it has exited.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_ships_a_real_redis_server_binary():
    # when
    path = redis_executable()

    # then
    assert path.name == "redis-server"
    assert os.access(path, os.X_OK)


def test_starts_answers_ping_and_stops_cleanly(tmp_path):
    # given
    server = EmbeddedRedis(tmp_path)

    # when
    url = server.start()
    client = redis.Redis.from_url(url)
    answered = client.ping()
    info = client.info("persistence")
    pid = server.process.pid if server.process else -1
    client.close()
    server.stop()

    # then
    assert url.startswith("redis://127.0.0.1:")
    assert answered is True
    assert info["aof_enabled"] == 1
    assert not port_open(server.port)
    assert not _pid_alive(pid)
    assert (tmp_path / "redis").is_dir()


def test_keeps_keys_across_a_stop_and_start(tmp_path):
    # given
    with EmbeddedRedis(tmp_path) as first:
        client = redis.Redis.from_url(first.url)
        client.set("rr:test:durable", "kept")
        client.xadd("rr:test:stream", {"unit": "evt_1:0:0"})
        client.close()

    # when
    with EmbeddedRedis(tmp_path) as second:
        client = redis.Redis.from_url(second.url)
        value = client.get("rr:test:durable")
        stream_length = client.xlen("rr:test:stream")
        client.close()

    # then
    assert value == b"kept"
    assert stream_length == 1
    assert (tmp_path / "redis" / "appendonly.aof").stat().st_size > 0


def test_refuses_a_port_that_is_taken(tmp_path):
    # given
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # when / then
        with pytest.raises(EmbeddedRedisError, match="already in use"):
            EmbeddedRedis(tmp_path, port=port).start()
