"""ScriptWriter (group commit) against the real Redis: replies reach their own callers,
concurrent calls share round trips, and failures reach every caller without a hang."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable

import pytest
import redis

from tests.conftest import STORE_DB, redis_url
from worker.stores.group_commit import ScriptWriter

# Counts its runs per key and answers with its argument; 'refuse' gets an error reply.
# It spins for ARGV[2] microseconds so that concurrent callers queue up behind it.
ECHO = """
local hold = tonumber(ARGV[2] or '0')
if hold > 0 then
  local t = redis.call('TIME')
  local until_us = t[1] * 1000000 + t[2] + hold
  repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
end
redis.call('INCR', KEYS[1])
if ARGV[1] == 'refuse' then return redis.error_reply('ERR refused on purpose') end
return ARGV[1]
"""


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Start ``count`` threads at once on ``work(i)``; fail if any is still running."""
    barrier = threading.Barrier(count)

    def start(i: int) -> None:
        barrier.wait()
        work(i)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads), "a caller never woke"


def test_a_lone_call_is_sent_alone_and_answered(redis_client, key_prefix):
    # given
    writer = ScriptWriter(redis_client, ECHO)
    # when
    reply = writer([f"{key_prefix}:runs"], ["hello"])
    # then
    assert reply == b"hello"
    assert (writer.groups, writer.calls) == (1, 1)
    assert redis_client.get(f"{key_prefix}:runs") == b"1"


def test_concurrent_calls_share_round_trips_and_each_gets_its_own_reply(redis_client, key_prefix):
    # given 16 threads calling 20 times each, the script holding Redis 1 ms per call
    writer = ScriptWriter(redis_client, ECHO)
    threads, per_thread = 16, 20
    replies: dict[int, list[bytes]] = {}

    def work(i: int) -> None:
        replies[i] = [
            writer([f"{key_prefix}:runs"], [f"t{i}-{n}", 1000]) for n in range(per_thread)
        ]

    # when
    run_threads(threads, work)
    # then every caller got its own replies, in its own order
    for i in range(threads):
        assert replies[i] == [f"t{i}-{n}".encode() for n in range(per_thread)]
    # and each call ran exactly once, in fewer round trips than calls
    total = threads * per_thread
    assert redis_client.get(f"{key_prefix}:runs") == str(total).encode()
    assert writer.calls == total
    assert writer.groups < total / 2


def test_an_error_reply_fails_only_its_own_call(redis_client, key_prefix):
    # given callers of which every third asks for an error reply
    writer = ScriptWriter(redis_client, ECHO)
    outcomes: dict[int, object] = {}

    def work(i: int) -> None:
        argument = "refuse" if i % 3 == 0 else f"ok{i}"
        try:
            outcomes[i] = writer([f"{key_prefix}:runs"], [argument, 500])
        except redis.ResponseError as exc:
            outcomes[i] = exc

    # when
    run_threads(12, work)
    # then the refused calls raised their own error and the rest were answered
    for i, outcome in outcomes.items():
        if i % 3 == 0:
            assert isinstance(outcome, redis.ResponseError)
            assert "refused on purpose" in str(outcome)
        else:
            assert outcome == f"ok{i}".encode()
    assert redis_client.get(f"{key_prefix}:runs") == b"12"
    assert writer.groups < 12


def test_a_script_flushed_from_redis_is_sent_in_full(redis_client, key_prefix):
    # given a writer whose script Redis has forgotten (as after a restart)
    writer = ScriptWriter(redis_client, ECHO)
    assert writer([f"{key_prefix}:runs"], ["before"]) == b"before"
    redis_client.script_flush()
    # when
    reply = writer([f"{key_prefix}:runs"], ["after"])
    # then the call was answered, and ran once
    assert reply == b"after"
    assert redis_client.get(f"{key_prefix}:runs") == b"2"


def test_a_dropped_connection_is_replaced_and_the_call_sent_again(redis_client, key_prefix):
    # given a writer whose connection Redis has closed since its last call
    name = f"rrtest-writer-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url(STORE_DB), client_name=name)
    writer = ScriptWriter(client, ECHO)
    assert writer([f"{key_prefix}:runs"], ["first"]) == b"first"
    (connection,) = [c for c in redis_client.client_list() if c["name"] == name]
    assert redis_client.client_kill_filter(_id=connection["id"]) == 1
    # when
    reply = writer([f"{key_prefix}:runs"], ["second"])
    # then the call was answered on a new connection, and ran once
    assert reply == b"second"
    assert redis_client.get(f"{key_prefix}:runs") == b"2"
    assert [c["id"] for c in redis_client.client_list() if c["name"] == name] != [connection["id"]]
    client.close()


def test_an_unreachable_redis_fails_every_waiting_caller(redis_available):
    # given a Redis address where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    writer = ScriptWriter(client, ECHO)
    errors: dict[int, BaseException] = {}

    def work(i: int) -> None:
        try:
            writer(["k"], [f"v{i}"])
        except redis.RedisError as exc:
            errors[i] = exc

    # when eight callers arrive at once
    run_threads(8, work)
    # then each one raised a connection error (none hung, none was answered)
    assert sorted(errors) == list(range(8))
    assert all(isinstance(error, redis.ConnectionError) for error in errors.values())


@pytest.mark.parametrize("threads", [1, 4])
def test_the_writer_can_be_used_again_after_a_failure(redis_client, key_prefix, threads):
    # given a call that failed with an error reply
    writer = ScriptWriter(redis_client, ECHO)
    with pytest.raises(redis.ResponseError):
        writer([f"{key_prefix}:runs"], ["refuse"])
    replies: dict[int, bytes] = {}

    # when callers come afterwards
    def work(i: int) -> None:
        replies[i] = writer([f"{key_prefix}:runs"], [f"again{i}"])

    run_threads(threads, work)
    # then they are answered
    assert replies == {i: f"again{i}".encode() for i in range(threads)}
