"""Chaos: N events through the real processes while everything that can fail, fails.

Every part runs as its own process, as in production: an embedded ``redis-server`` of the
test's own (append-only file on, a free port, store and broker; the shared Redis on 6379 is
not used), gunicorn serving the receiver, the relay, two Celery workers, beat, and both
provider sandboxes. A sender delivers N signed events the way a webhook producer does (it
retries on connection errors and 5xx until it gets a 2xx); 20 % of the events are
delivered more than once, some of them concurrently. Meanwhile:

* every provider call answers after ``RR_CHAOS_PROVIDER_LATENCY_MS`` (300 ms), and the
  workers run the product's pool (threads, ``WORKER_CONCURRENCY``), so many calls are in
  flight when a worker dies;
* both sandboxes inject faults at random (seeded): 5xx, 429 with Retry-After,
  commit-then-timeout (the order exists, the answer never comes) and 412 If-Match races
  (Ifeelgoods: on the redeem of orders left half done by "an earlier release", pending
  redemptions created under the keys of some events before they are sent);
* every RewardOps bearer token is expired every few seconds (the client refreshes once
  on 401; a rate-based 401 fault would also hit the fresh token, which real expiry never
  does, and a second 401 is a credential failure by contract);
* a worker is killed with SIGKILL (its whole process group, pool children included) every
  few seconds, then started again;
* the web server is killed with SIGKILL once, mid-traffic, and started again;
* Redis is restarted once with the same data directory (SHUTDOWN, which flushes the AOF,
  then a new server on the same port).

At the end every accepted event has all of its units terminal: fulfilled, or dead-lettered
or unroutable with a reason in the dead-letter store; and the sandbox counters show one
provider order per unit that has one, and none anywhere else: nothing lost, nothing doubled.

Scale with ``RR_CHAOS_EVENTS`` (default 120, a CI-sized run well under 3 minutes);
``RR_CHAOS_BROKER=amqp`` uses RabbitMQ (``RR_TEST_AMQP_URL``) as the broker instead::

    RR_CHAOS_EVENTS=2000 pytest -m chaos -s tests/integration/test_chaos_e2e.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from rewardrelay.embedded import EmbeddedRedis, die_with_parent, free_port, port_open
from sandboxes import SandboxControl
from tasks.providers.adapters import provider_key
from tasks.providers.ifeelgoods import IfeelgoodsClient
from tests.conftest import TEST_ADMIN_TOKEN, TEST_CODE_KEY, TEST_CONIQ_SECRET, TEST_EVENT_SECRET
from tests.ifeelgoods_staging import create_pending_redemption
from tests.integration.conftest import (
    AMQP_URL,
    IFG_KEY,
    IFG_SECRET,
    REPO,
    ROPS_ID,
    ROPS_SECRET,
    _drop_queue,
    coniq_reward,
    internal_grant,
)
from worker.config import Settings
from worker.signing import signed_headers
from worker.stores.dead_letters import DeadLetters
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import Ledger
from worker.stores.models import UnitState

EVENTS = int(os.environ.get("RR_CHAOS_EVENTS", "120"))
# "redis" (the embedded server is store and broker) or "amqp" (RabbitMQ at AMQP_URL is the
# broker, the embedded Redis the store).
BROKER = os.environ.get("RR_CHAOS_BROKER", "redis")
SEED = int(os.environ.get("RR_CHAOS_SEED", "20261123"))
# Share of events delivered more than once (each of them two or three times in all).
REDELIVERED_SHARE = 0.2
# Deliveries per second the sender aims at, so the faults land while traffic flows.
SEND_RATE_PER_SECOND = float(os.environ.get("RR_CHAOS_RATE", "15"))
SENDER_THREADS = 8
# Seconds between two SIGKILLs of a worker; at least MIN_KILLS happen in every run.
KILL_INTERVAL_SECONDS = float(os.environ.get("RR_CHAOS_KILL_INTERVAL", "5"))
MIN_KILLS = 3
# Seconds between two expiries of every RewardOps token.
TOKEN_EXPIRY_INTERVAL_SECONDS = 3.0
# When (share of deliveries answered) the web server and Redis are restarted.
WEB_RESTART_AT = 0.3
REDIS_RESTART_AT = 0.6
# How long, after the last delivery, every unit may take to become terminal.
SETTLE_SECONDS = 60 + EVENTS * 0.1
# pytest-timeout for the whole test: sending, settling, start-up and shutdown.
TIMEOUT_SECONDS = int(60 + EVENTS * 1.3 / SEND_RATE_PER_SECOND + SETTLE_SECONDS + 60)

# Every provider call that draws no other fault answers this late (RR_CHAOS_PROVIDER_LATENCY_MS):
# real providers take hundreds of milliseconds, so many calls are in flight on the workers'
# thread pools while they are killed.
PROVIDER_LATENCY_MS = int(os.environ.get("RR_CHAOS_PROVIDER_LATENCY_MS", "300"))

# Share of Ifeelgoods gift events whose order ids already hold a pending redemption when
# they arrive (an earlier release created orders, then redeemed them in a second call, and
# stopped in between): fulfilling them redeems with If-Match, where the 412 races land.
HALF_DONE_SHARE = 0.15
GIFT_PROMOTION_ID = 1  # offer 1001 and GIFT10 in worker/rules.example.toml

PREFIX = "rrchaos"
# What a delivery plan holds: (weight, source, kind) of the events sent.
MIX: list[tuple[int, str, str]] = [
    (30, "coniq", "gift"),  # offer 1001 → Ifeelgoods
    (20, "coniq", "voucher"),  # offer 2002 → RewardOps
    (15, "internal", "gift"),  # GIFT10 × 1-2 → Ifeelgoods
    (20, "internal", "voucher"),  # VOUCHER25 × 1-2 → RewardOps
    (5, "internal", "no-such-sku"),  # Ifeelgoods 404 not_found → dead letter, no order
    (5, "internal", "rejected"),  # RewardOps item ends rejected → dead letter, one order
    (5, "coniq", "unroutable"),  # offer 9999, no rule → unroutable, no order
]
# Extra rules on top of the shipped ones: products the sandboxes refuse, for dead letters.
EXTRA_RULES = """
[[rule]]
name = "chaos-unknown-sku"
source = "internal"
event = "reward.granted"
match = { reward_code = "NOSKU" }
provider = "ifeelgoods"
promotion_id = 2
sku = "APP-ITU-10USD-US"

[[rule]]
name = "chaos-rejected-item"
source = "internal"
event = "reward.granted"
match = { reward_code = "REJECT" }
provider = "rewardops"
program_id = 12
item_order_token = "tok-reject"
"""
IFEELGOODS_FAULTS: list[dict[str, Any]] = [
    {  # create-and-redeem, every first submission
        "method": "POST",
        "path": "/fulfillment/v2/promotions/*/redemptions/actions/redeem",
        "kind": "commit_then_timeout",
        "seconds": 1.5,
        "rate": 0.04,
    },
    {  # the If-Match redeem of a half-done order (HALF_DONE_SHARE)
        "method": "POST",
        "path": "/fulfillment/v2/redemptions/*/actions/redeem",
        "kind": "precondition_race",
        "rate": 0.5,
    },
    {"path": "/fulfillment/v2/*", "kind": "status", "status": 503, "rate": 0.05},
    {"path": "/fulfillment/v2/*", "kind": "rate_limit", "retry_after": 1, "rate": 0.04},
    {"path": "/fulfillment/v2/*", "kind": "latency", "ms": PROVIDER_LATENCY_MS},
]
REWARDOPS_FAULTS: list[dict[str, Any]] = [
    {
        "method": "POST",
        "path": "/api/v4/programs/*/orders",
        "kind": "commit_then_timeout",
        "seconds": 1.5,
        "rate": 0.04,
    },
    {"path": "/api/v4/*", "kind": "status", "status": 502, "rate": 0.05},
    {"path": "/api/v4/*", "kind": "rate_limit", "retry_after": 1, "rate": 0.04},
    {"path": "/api/v4/*", "kind": "latency", "ms": PROVIDER_LATENCY_MS},
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.timeout(TIMEOUT_SECONDS),
]


# --- processes ----------------------------------------------------------------------------


class Child:
    """One child process in its own process group (so a kill takes its children too)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def kill(self, sig: int = signal.SIGKILL, wait: float = 20) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def wait_for(self, marker: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log.read_bytes():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not log {marker!r}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


class ChaosStack:
    """Embedded Redis, gunicorn, relay, workers, beat and both sandboxes, all processes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.redis_server = EmbeddedRedis(tmp / "data")
        redis_url = self.redis_server.start()
        rules = tmp / "rules.toml"
        rules.write_text((REPO / "worker" / "rules.example.toml").read_text() + EXTRA_RULES)
        self.ifg_port, self.rops_port, self.web_port = free_port(), free_port(), free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RR_", "CELERY_"))},
            "REDIS_URL": redis_url,
            "RR_KEY_PREFIX": PREFIX,
            "TASK_QUEUE": f"{PREFIX}-tasks",
            "RULES_FILE": str(rules),
            "CONIQ_WEBHOOK_SECRETS": TEST_CONIQ_SECRET,
            "EVENT_SECRETS": TEST_EVENT_SECRET,
            "ADMIN_TOKEN": TEST_ADMIN_TOKEN,
            "CODE_KEYS": TEST_CODE_KEY,
            "IFEELGOODS_BASE_URL": f"http://127.0.0.1:{self.ifg_port}/fulfillment/v2",
            "IFEELGOODS_API_KEY": IFG_KEY,
            "IFEELGOODS_API_SECRET": IFG_SECRET,
            "REWARDOPS_BASE_URL": f"http://127.0.0.1:{self.rops_port}/api/v4",
            "REWARDOPS_CLIENT_ID": ROPS_ID,
            "REWARDOPS_CLIENT_SECRET": ROPS_SECRET,
            "PROVIDER_TIMEOUT_SECONDS": "1.0",
            "RETRY_BASE_SECONDS": "0.1",
            "RETRY_MAX_DELAY_SECONDS": "1.0",
            "RETRY_MAX_ATTEMPTS": "40",
            "UNIT_STALE_SECONDS": "3",
            "TASK_LEASE_SECONDS": "4",
            "DELIVERY_POLL_SECONDS": "0.3",
            "SWEEP_INTERVAL_SECONDS": "1",
            "LOG_FORMAT": "text",
            "PYTHONPATH": str(REPO),
        }
        if BROKER == "amqp":
            # a queue of this run's own on the shared RabbitMQ, deleted at the end
            self.env["CELERY_BROKER_URL"] = AMQP_URL
            self.env["TASK_QUEUE"] = f"{PREFIX}-{uuid.uuid4().hex[:8]}-tasks"
        self.settings = Settings.from_env(self.env)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.keys = Keys(PREFIX)
        self.children: dict[str, Child] = {}
        self.workers: list[str] = []
        self.kills = 0
        self._spawned = Counter[str]()

    # children ------------------------------------------------------------------------------
    def _spawn(self, role: str, argv: list[str]) -> Child:
        self._spawned[role] += 1
        name = f"{role}-{self._spawned[role]}"
        child = Child(name, argv, self.env, self.logs)
        self.children[name] = child
        return child

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def start_sandboxes(self) -> tuple[SandboxControl, SandboxControl]:
        for name, port in (("ifeelgoods", self.ifg_port), ("rewardops", self.rops_port)):
            self._spawn(
                f"sandbox-{name}",
                self._python("-m", "rewardrelay.cli", "sandbox", name, "--port", str(port)),
            )
        for port in (self.ifg_port, self.rops_port):
            _wait_port(port)
        return (
            SandboxControl(f"http://127.0.0.1:{self.ifg_port}"),
            SandboxControl(f"http://127.0.0.1:{self.rops_port}"),
        )

    def start_web(self) -> Child:
        child = self._spawn(
            "web",
            self._python(
                "-m", "gunicorn",
                "-w", "2", "-k", "gthread", "--threads", "8",
                "-b", f"127.0.0.1:{self.web_port}",
                "--graceful-timeout", "5",
                "webhooks:create_app()",
            ),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return child
            except httpx.HTTPError:
                pass
            if child.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"web did not come up:\n{child.tail()}")

    def start_relay(self) -> Child:
        child = self._spawn("relay", self._python("-m", "rewardrelay.cli", "relay"))
        child.wait_for(b"relay started")
        return child

    def start_beat(self) -> Child:
        return self._spawn(
            "beat",
            self._python(
                "-m", "celery", "-A", "worker.app", "beat", "-l", "info",
                "-s", str(self.tmp / "beat-schedule"),
            ),
        )  # fmt: skip

    def start_worker(self) -> Child:
        number = self._spawned["worker"] + 1
        child = self._spawn(
            "worker",
            self._python(
                "-m", "celery", "-A", "worker.app", "worker", "-l", "info",
                "-n", f"chaos{number}@%h",
                "--without-gossip", "--without-mingle",
            ),
        )  # fmt: skip
        child.wait_for(b"ready.")
        self.workers.append(child.name)
        return child

    def kill_a_worker(self) -> None:
        """SIGKILL the oldest worker's whole process group, then start a new one."""
        name = self.workers.pop(0)
        self.children[name].kill(signal.SIGKILL)
        self.kills += 1
        self.start_worker()

    def restart_web(self) -> None:
        """SIGKILL gunicorn (master and workers) mid-traffic; start it on the same port."""
        for name in [n for n in self.children if n.startswith("web-")]:
            self.children[name].kill(signal.SIGKILL)
        self.start_web()

    def restart_redis(self) -> None:
        """SHUTDOWN (AOF flushed) and a new server on the same port and data directory."""
        self.redis_server.stop()
        time.sleep(1.0)  # an outage, not a blip: clients see refused connections
        self.redis_server.start()

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.kill(signal.SIGTERM, wait=15)
        self.redis.close()
        self.redis_server.stop()
        if BROKER == "amqp":
            _drop_queue(self.settings)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def logs_tail(self, chars: int = 1500) -> str:
        return "\n".join(
            f"--- {child.name}\n{child.tail(chars)}" for child in self.children.values()
        )


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


# --- the sender ---------------------------------------------------------------------------


@dataclass
class Planned:
    event: dict[str, Any]
    source: str
    kind: str
    deliveries: int = 1
    statuses: list[int] = field(default_factory=list)
    refused: str = ""

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def accepted(self) -> bool:
        return any(status in (200, 202) for status in self.statuses)


def plan(rng: random.Random) -> list[Planned]:
    weights = [weight for weight, _, _ in MIX]
    planned = []
    for _ in range(EVENTS):
        _, source, kind = rng.choices(MIX, weights)[0]
        event_id = f"evt_chaos_{uuid.uuid4().hex[:16]}"
        if source == "coniq":
            offer = {"gift": "1001", "voucher": "2002", "unroutable": "9999"}[kind]
            event = coniq_reward(offer_id=offer, event_id=event_id)
        else:
            code = {
                "gift": "GIFT10",
                "voucher": "VOUCHER25",
                "no-such-sku": "NOSKU",
                "rejected": "REJECT",
            }[kind]
            quantity = rng.choice([1, 2]) if kind in ("gift", "voucher") else 1
            event = internal_grant([{"reward_code": code, "quantity": quantity}], event_id)
        planned.append(Planned(event, source, kind))
    for item in rng.sample(planned, round(EVENTS * REDELIVERED_SHARE)):
        item.deliveries = rng.choice([2, 3])
    return planned


class Sender:
    """Delivers like a webhook producer: retries connection errors and 5xx until a 2xx."""

    GIVE_UP_SECONDS = 120.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=10)
        self.done = 0
        self.retries = 0
        self._lock = threading.Lock()

    def deliver(self, item: Planned) -> None:
        raw = json.dumps(item.event).encode()
        path, secret = (
            ("/webhooks/coniq", TEST_CONIQ_SECRET)
            if item.source == "coniq"
            else ("/events", TEST_EVENT_SECRET)
        )
        deadline = time.monotonic() + self.GIVE_UP_SECONDS
        while True:
            headers = signed_headers(raw, secret, item.id)  # content-type included
            wait = 0.2
            try:
                response = self.http.post(self.url + path, content=raw, headers=headers)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code < 500:
                with self._lock:
                    item.statuses.append(response.status_code)
                    self.done += 1
                    if response.status_code >= 300:
                        item.refused = response.text[:300]
                return
            if response is not None:
                wait = float(response.headers.get("retry-after", "0.2") or 0.2)
            with self._lock:
                self.retries += 1
            if time.monotonic() > deadline:
                with self._lock:
                    item.refused = f"gave up: {response.status_code if response else 'no answer'}"
                    self.done += 1
                return
            time.sleep(min(wait, 1.0))

    def run(self, deliveries: list[Planned]) -> None:
        with ThreadPoolExecutor(SENDER_THREADS) as pool:
            start = time.monotonic()
            for position, item in enumerate(deliveries):
                # paced: delivery n leaves at n / rate seconds
                delay = start + position / SEND_RATE_PER_SECOND - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.deliver, item)


# --- the test -----------------------------------------------------------------------------


@pytest.fixture
def chaos_stack(tmp_path: Path) -> Iterator[ChaosStack]:
    stack = ChaosStack(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def test_chaos_every_accepted_event_is_fulfilled_or_dead_lettered_and_issued_at_most_once(
    chaos_stack: ChaosStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the whole stack as processes, and sandboxes that fail at random (seeded)
    stack = chaos_stack
    ifeelgoods, rewardops = stack.start_sandboxes()
    rng = random.Random(SEED)
    planned = plan(rng)
    half_done = _leave_half_done_orders(stack, planned, rng)
    rewardops.configure(delivery_delay=0.3)
    ifeelgoods.set_faults(*IFEELGOODS_FAULTS, seed=SEED)
    rewardops.set_faults(*REWARDOPS_FAULTS, seed=SEED + 1)
    stack.start_web()
    stack.start_relay()
    stack.start_beat()
    stack.start_worker()
    stack.start_worker()
    deliveries = [item for item in planned for _ in range(item.deliveries)]
    rng.shuffle(deliveries)
    sender = Sender(stack.url)

    # when the events are delivered while workers are killed, and web and Redis restarted
    started = time.monotonic()
    sending = threading.Thread(target=sender.run, args=(deliveries,), name="chaos-sender")
    sending.start()
    web_restarted = redis_restarted = False
    next_kill = time.monotonic() + KILL_INTERVAL_SECONDS
    next_expiry, token_expiries = time.monotonic() + TOKEN_EXPIRY_INTERVAL_SECONDS, 0
    unit_ids: dict[str, list[str]] = {}
    settle_deadline: float | None = None
    while True:
        progress = sender.done / len(deliveries)
        if not web_restarted and progress >= WEB_RESTART_AT:
            stack.restart_web()
            web_restarted = True
        elif not redis_restarted and progress >= REDIS_RESTART_AT:
            stack.restart_redis()
            redis_restarted = True
        elif time.monotonic() >= next_kill:
            stack.kill_a_worker()
            next_kill = time.monotonic() + KILL_INTERVAL_SECONDS
        if time.monotonic() >= next_expiry:
            token_expiries += 1
            rewardops.expire_tokens()
            next_expiry = time.monotonic() + TOKEN_EXPIRY_INTERVAL_SECONDS
        sent = not sending.is_alive() and sender.done == len(deliveries)
        if sent and settle_deadline is None:
            settle_deadline = time.monotonic() + SETTLE_SECONDS
            unit_ids = _unit_ids(stack, planned)
        if sent and web_restarted and redis_restarted and stack.kills >= MIN_KILLS:
            if not _pending(stack, unit_ids):
                break
            assert settle_deadline is not None
            if time.monotonic() > settle_deadline:
                break
        time.sleep(0.25)
    duration = time.monotonic() - started

    # then every event was accepted, and every unit of it is terminal with a reason
    accepted = [item for item in planned if item.accepted]
    ledger, letters = Ledger(stack.redis, stack.keys), DeadLetters(stack.redis, stack.keys)
    units = {
        unit.id: unit for unit in ledger.get_many([u for ids in unit_ids.values() for u in ids])
    }
    states = Counter(unit.state.value for unit in units.values())
    issued = {
        "ifeelgoods": ifeelgoods.counters()["issued"],
        "rewardops": rewardops.counters()["issued"],
    }
    faults = {
        "ifeelgoods": ifeelgoods.counters()["faults_injected"],
        "rewardops": rewardops.counters()["faults_injected"],
    }
    figures = {
        "events": EVENTS,
        "deliveries": len(deliveries),
        "redelivered_events": sum(1 for item in planned if item.deliveries > 1),
        "accepted": len(accepted),
        "answered_202": sum(item.statuses.count(202) for item in planned),
        "answered_200_duplicate": sum(item.statuses.count(200) for item in planned),
        "sender_retries": sender.retries,
        "units": len(units),
        "fulfilled": states.get("fulfilled", 0),
        "dead_lettered": states.get("dead_lettered", 0),
        "unroutable": states.get("unroutable", 0),
        "other_states": {k: v for k, v in states.items() if k not in TERMINAL_SHOWN},
        "worker_kills": stack.kills,
        # attempts begun but never recorded: the worker died in the middle (or the lease
        # ran out and another delivery took over)
        "units_with_an_attempt_cut_by_a_kill": sum(
            1 for unit_id in units if _has_cut_attempt(ledger.attempts(unit_id))
        ),
        "half_done_orders_before_sending": half_done,
        "web_restarts": 1,
        "redis_restarts": 1,
        "rewardops_token_expiries": token_expiries,
        "faults_injected": faults,
        "orders_issued": {name: sum(counts.values()) for name, counts in issued.items()},
        "dead_lettered_with_an_order": sum(
            1
            for unit in units.values()
            if unit.state is UnitState.DEAD_LETTERED
            and issued.get(unit.provider, {}).get(provider_key(unit.id))
        ),
        "dead_letter_reasons": dict(
            Counter(
                letter.reason
                for unit in units.values()
                if unit.state is UnitState.DEAD_LETTERED
                and (letter := letters.get(unit.id)) is not None
            )
        ),
        "duration_seconds": round(duration, 1),
    }
    with capsys.disabled():
        sys.stdout.write(f"\nchaos N={EVENTS} broker={BROKER}: {json.dumps(figures, indent=1)}\n")

    assert [item.refused for item in planned if item.refused] == []
    assert len(accepted) == EVENTS
    not_terminal = [unit for unit in units.values() if not unit.terminal]
    assert not not_terminal, (not_terminal[:5], stack.logs_tail())
    assert len(units) == sum(len(ids) for ids in unit_ids.values())
    for unit in units.values():
        if unit.state in (UnitState.DEAD_LETTERED, UnitState.UNROUTABLE):
            letter = letters.get(unit.id)
            assert letter is not None and letter.reason, (unit, letter)
        else:
            assert unit.state is UnitState.FULFILLED, unit

    # and never two provider orders for one unit: every fulfilled unit has exactly one, a
    # unit that failed before ordering none, and no order exists for anything else
    kinds = {item.id: item.kind for item in planned}
    ours = {provider_key(unit.id): unit for unit in units.values()}
    for provider, counts in issued.items():
        assert set(counts) <= set(ours), (provider, set(counts) - set(ours))
        doubled = {key: n for key, n in counts.items() if n != 1}
        assert not doubled, (provider, doubled)
        for key in counts:
            assert ours[key].provider == provider, (ours[key], provider)
    for key, unit in ours.items():
        orders = issued.get(unit.provider, {}).get(key, 0)
        if unit.state is UnitState.FULFILLED:
            assert orders == 1, unit
        if kinds[unit.event_id] in ("unroutable", "no-such-sku"):
            assert orders == 0, unit
    # the kinds meant to fail did, and did so for the expected reason
    for unit in units.values():
        kind = kinds[unit.event_id]
        if kind == "unroutable":
            assert unit.state is UnitState.UNROUTABLE, unit
        elif kind in ("no-such-sku", "rejected"):
            assert unit.state is UnitState.DEAD_LETTERED, unit


TERMINAL_SHOWN = {"fulfilled", "dead_lettered", "unroutable"}


def _leave_half_done_orders(stack: ChaosStack, planned: list[Planned], rng: random.Random) -> int:
    """Create pending redemptions under the keys of a share of the gift events' units."""
    client = IfeelgoodsClient(
        f"http://127.0.0.1:{stack.ifg_port}/fulfillment/v2", IFG_KEY, IFG_SECRET
    )
    gifts = [item for item in planned if item.kind == "gift"]
    created = 0
    with client:
        for item in rng.sample(gifts, round(len(gifts) * HALF_DONE_SHARE)):
            if item.source == "coniq":
                quantity = 1
            else:
                quantity = int(item.event["data"]["rewards"][0]["quantity"])
            for index in range(quantity):
                key = provider_key(f"{item.id}:0:{index}")
                create_pending_redemption(client, GIFT_PROMOTION_ID, key)
                created += 1
    return created


def _unit_ids(stack: ChaosStack, planned: list[Planned]) -> dict[str, list[str]]:
    """Each accepted event's unit ids, read from the store (retrying through its restart)."""
    inbox = Inbox(stack.redis, stack.keys)
    result: dict[str, list[str]] = {}
    for item in planned:
        if not item.accepted:
            continue
        stored = _retry(lambda item=item: inbox.get(item.id))
        assert stored is not None, f"accepted event {item.id} is not in the store: lost"
        result[item.id] = list(stored.unit_ids)
    return result


def _has_cut_attempt(history: list[dict[str, Any]]) -> bool:
    """An attempt number missing from the history was begun and never finished."""
    numbers = [int(record["attempt"]) for record in history]
    return bool(numbers) and numbers != list(range(1, max(numbers) + 1))


def _pending(stack: ChaosStack, unit_ids: dict[str, list[str]]) -> bool:
    ledger = Ledger(stack.redis, stack.keys)
    all_ids = [u for ids in unit_ids.values() for u in ids]
    units = _retry(lambda: ledger.get_many(all_ids))
    return len(units) < len(all_ids) or not all(unit.terminal for unit in units)


def _retry(call: Any, attempts: int = 50) -> Any:
    for _ in range(attempts - 1):
        try:
            return call()
        except redis.ConnectionError:
            time.sleep(0.2)
    return call()


def _difference(
    issued: dict[str, dict[str, int]], expected: dict[str, dict[str, int]]
) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for provider in expected:
        got, want = issued.get(provider, {}), expected[provider]
        keys = set(got) | set(want)
        diff[provider] = {
            k: (got.get(k, 0), want.get(k, 0)) for k in keys if got.get(k) != want.get(k)
        }
    return diff
