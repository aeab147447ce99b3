"""Group commit: concurrent callers' Lua script calls share one Redis round trip.

The edge makes exactly one Redis call per accepted event (the inbox script). Under load
several gunicorn threads reach that call at once, and a round trip of its own costs each
of them, and Redis, system calls and a wake-up that measured more than the script itself.
Here the first caller to arrive becomes the *leader*: it sends every call waiting at that
moment as one pipeline on the writer's own connection, hands each caller its reply, and
passes the lead to the next waiter if more arrived meanwhile. A caller that arrives alone
goes straight through, so a quiet edge pays one uncontended lock and nothing more.

Each script call stays atomic on its own (no MULTI): a group is a batch of independent
commands, not a transaction. An error reply fails only its own call. A connection failure
fails every call of the group still without a reply, with the ``redis.RedisError`` a lone
call would have raised, after one resend on a fresh connection (what redis-py's client
does for a dropped connection): use it only for scripts that are safe to run twice.

With ``wait_replicas`` set, each group ends with ``WAIT replicas timeout`` on the same
connection, so one WAIT covers every write of the group: a caller gets its reply only once
that many replicas hold it, and ``ReplicaTimeout`` otherwise (its write may still be on the
primary; the script must make a retry harmless, as the inbox's dedupe does).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["ReplicaTimeout", "ScriptWriter"]

Arg = str | bytes | int | float


class ReplicaTimeout(redis.RedisError):
    """The write reached the primary, but not ``wait_replicas`` replicas in time."""


class _Call:
    """One caller's script call, its outcome, and the lock it sleeps on meanwhile."""

    __slots__ = ("keys", "args", "reply", "error", "done", "lead", "wake")

    def __init__(self, keys: Sequence[str], args: Sequence[Arg]) -> None:
        self.keys, self.args = keys, args
        self.reply: Any = None
        self.error: BaseException | None = None
        self.done = False  # a reply or an error reply has been read
        self.lead = False  # woken to lead the next group rather than with an outcome
        # A plain lock as a one-shot signal: taken now, released to wake the caller.
        self.wake = threading.Lock()
        self.wake.acquire()


class ScriptWriter:
    """Runs one Lua script for many threads, sending concurrent calls as one pipeline.

    ``groups`` and ``calls`` count what was sent (for tests and benchmarks).
    """

    def __init__(
        self, client: redis.Redis, script: str, *, wait_replicas: int = 0, wait_timeout_ms: int = 0
    ) -> None:
        self._pool = client.connection_pool
        self._wait = (wait_replicas, wait_timeout_ms) if wait_replicas > 0 else None
        self._source = script
        self._sha = client.register_script(script).sha
        self._lock = threading.Lock()
        self._waiting: list[_Call] = []
        self._leading = False
        # The writer's own connection, used only by the current leader; made on first use.
        self._connection: Any = None
        self.groups = 0
        self.calls = 0

    def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The script's reply for ``keys`` and ``args``.

        Raises:
            redis.RedisError: Redis is unreachable, or answered this call with an error.
        """
        call = _Call(keys, args)
        with self._lock:
            self._waiting.append(call)
            lead = not self._leading
            self._leading = True
        if not lead:
            call.wake.acquire()  # a leader finished our call, or passed us the lead
            lead = call.lead
        if lead:
            self._lead()
        if call.error is not None:
            raise call.error
        return call.reply

    def _lead(self) -> None:
        """Send everything waiting as one group, wake its callers, pass the lead on."""
        with self._lock:
            group, self._waiting = self._waiting, []
            self.groups += 1
            self.calls += len(group)
        try:
            self._run(group)
        finally:
            with self._lock:
                successor = self._waiting[0] if self._waiting else None
                self._leading = successor is not None
            for call in group:  # the leader's own call too: a release wakes nobody there
                call.wake.release()
            if successor is not None:
                successor.lead = True
                successor.wake.release()

    def _run(self, group: list[_Call]) -> None:
        """The group's replies; NOSCRIPT (a restarted Redis) sends the source once."""
        try:
            try:
                self._send(group, "EVALSHA", self._sha)
            except redis.ConnectionError:  # a stale connection: Redis restarted, or idle
                self._disconnect()
                self._send([call for call in group if not call.done], "EVALSHA", self._sha)
            unknown = [call for call in group if isinstance(call.error, NoScriptError)]
            if unknown:
                self._send(unknown, "EVAL", self._source)
        except BaseException as exc:
            # Every caller still without an outcome gets the leader's error as it is: a
            # RedisError answers 503 at the edge; anything else is a bug and shows as one.
            self._disconnect()
            for call in group:
                if not call.done or isinstance(call.error, NoScriptError):
                    call.error = exc
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours
                raise

    def _send(self, calls: list[_Call], command: str, script: str) -> None:
        """One pipeline of ``calls``; each call's reply or error reply lands on it."""
        if self._connection is None:
            self._connection = self._pool.make_connection()
        connection = self._connection
        commands: list[tuple[Arg, ...]] = [
            (command, script, len(call.keys), *call.keys, *call.args) for call in calls
        ]
        if self._wait is not None:
            commands.append(("WAIT", *self._wait))
        connection.send_packed_command(connection.pack_commands(commands))
        for call in calls:
            call.done = False
            try:
                call.reply, call.error = connection.read_response(), None
            except ResponseError as exc:  # this call's error; the other replies follow
                call.reply, call.error = None, exc
            call.done = True
        if self._wait is not None:
            self._replicated(calls, int(connection.read_response()))

    def _replicated(self, calls: list[_Call], acknowledged: int) -> None:
        """Fail every call of the group that wrote, when too few replicas acknowledged."""
        assert self._wait is not None
        wanted, timeout_ms = self._wait
        if acknowledged >= wanted:
            return
        for call in calls:
            if call.error is None:
                call.reply = None
                call.error = ReplicaTimeout(
                    f"{acknowledged} of {wanted} replicas acknowledged within {timeout_ms} ms"
                )

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.disconnect()
