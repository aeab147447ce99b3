"""``python -m bench.retention``: Redis bytes per event before and after retention, and
what the expiry work costs a unit's last transition.

A private ``redis-server`` (no AOF; nobody else's keys) holds ``--events`` events taken
through the real stores as the pipeline does it: the inbox script accepts each (the
sample ``reward.granted`` body, one unit, a customer of its own, indexed by keyed hash),
the relay's part marks the unit dispatched and empties the outbox, and the worker's part
begins the unit and finishes it FULFILLED with a route, a provider reference, two codes
and an attempt record. Then:

* **before**: ``MEMORY USAGE`` summed over every key under the prefix (events, units,
  attempt lists, markers, indexes: the events index, the customers' index sets, the
  closing queue, the outbox stream) divided by the events, and ``INFO used_memory``
  growth per event;
* the retention task's close work (``Retention.close_waiting``, batches of 1,000) is
  timed, with ``RETENTION_SECONDS`` = 1; after Redis expired the data, **after** is
  measured the same way: what remains per event is the dedupe marker;
* the Redis CPU time of the terminal transition (``Ledger.finish`` to FULFILLED, from
  ``INFO commandstats``: what the expiry work adds to the store, free of client and
  machine noise) is measured with the ledger's script as shipped (which queues the event
  for closing) and with the same script minus that queueing, in alternating rounds; the
  cost ratio is (finish + close script, per event) / (finish without queueing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.common import ROOT, PrivateRedis
from webhooks.units import canonical_json
from worker.stores import ledger as ledger_module
from worker.stores.inbox import Inbox
from worker.stores.keys import Keys
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState
from worker.stores.outbox import Outbox
from worker.stores.personal_data import SubjectHasher, subjects_of
from worker.stores.retention import Retention, RetentionPolicy, stored_bytes

RESULTS = ROOT / "bench" / "results"
PREFIX = "rrbench"
HASHER = SubjectHasher(b"bench-erasure-key-0123456789abcdef")
# The ledger's finish script without the line that queues the event for retention.
_QUEUEING = """if new_state == 'fulfilled' or new_state == 'ignored' then
  redis.call('SADD', KEYS[7], redis.call('HGET', unit, 'event_id') or '')
end
"""
ROUTE = {"provider": "ifeelgoods", "promotion_id": 3001, "sku": "GIFT-10-USD", "rule": "gift10"}


def sample_event(n: int) -> dict[str, Any]:
    event_id = f"evt_{uuid.uuid4().hex[:24]}"
    return {
        "id": event_id,
        "type": "reward.granted",
        "created_at": "2026-12-06T10:00:00Z",
        "account_id": "bench-mall",
        "data": {
            "recipient": {
                "email": f"customer{n}@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
            },
            "rewards": [{"reward_code": "GIFT10", "quantity": 1}],
            "reference": "crm-campaign-7",
        },
    }


def accept_all(client: redis.Redis, keys: Keys, count: int) -> list[str]:
    """Accept ``count`` events as the edge does; their unit ids."""
    inbox, outbox = Inbox(client, keys), Outbox(client, keys)
    unit_ids = []
    for n in range(count):
        document = sample_event(n)
        body = canonical_json(document)
        found = subjects_of("internal", document["type"], document)
        inbox.accept(
            event_id=document["id"],
            source="internal",
            event_type=document["type"],
            fingerprint=hashlib.sha256(body.encode()).hexdigest(),
            body=body,
            units=[UnitSpec(line=0, index=0, match={"reward_code": "GIFT10"})],
            now=time.time(),
            stale_after=45.0,
            subjects=[HASHER.digest(kind, value) for kind, value in found],
        )
        unit_id = f"{document['id']}:0:0"
        outbox.mark_dispatched([unit_id], time.time())
        unit_ids.append(unit_id)
    client.xtrim(keys.outbox, maxlen=0)  # the relay deletes what it published
    return unit_ids


def fulfil_all(client: redis.Redis, ledger: Ledger, unit_ids: list[str]) -> float:
    """Begin every unit, then finish each FULFILLED as the worker does; the Redis CPU time
    (``INFO commandstats``, microseconds) spent in the finish scripts."""
    begun = [ledger.begin(unit_id, now=time.time(), lease_seconds=60.0) for unit_id in unit_ids]
    client.config_resetstat()
    for unit_id, taken in zip(unit_ids, begun, strict=True):
        record = AttemptRecord(
            attempt=taken.attempt,
            at=round(time.time(), 3),
            mode=taken.decision,
            outcome=AttemptOutcome.FULFILLED,
            duration_ms=42,
            task_id=str(uuid.uuid4()),
        )
        fields: dict[str, str | float | int] = {
            "provider": "ifeelgoods",
            "route": json.dumps(ROUTE),
            "provider_ref": f"ifg-order-{uuid.uuid4().hex[:16]}",
            "codes": json.dumps([f"CODE-{uuid.uuid4().hex[:12].upper()}"] * 2),
            "links": "[]",
            "fulfilled_at": time.time(),
        }
        ledger.finish(
            unit_id,
            taken.attempt,
            UnitState.FULFILLED,
            record,
            now=time.time(),
            next_check_at=None,
            fields=fields,
        )
    return script_usec(client)


def script_usec(client: redis.Redis) -> float:
    """Redis CPU time (microseconds) in scripts since the last ``CONFIG RESETSTAT``."""
    stats = client.info("commandstats")
    return float(
        sum(stats.get(name, {}).get("usec", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    )


def prefix_bytes(client: redis.Redis) -> tuple[int, int]:
    """(sum of MEMORY USAGE over every key under the prefix, number of keys)."""
    names = [key.decode() for key in client.scan_iter(match=f"{PREFIX}:*", count=1000)]
    return stored_bytes(client, names), len(names)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def wait_expired(client: redis.Redis, keys: Keys, timeout: float = 120.0) -> float:
    """Seconds until no event key is left (SCAN also makes Redis expire what it meets)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not any(True for _ in client.scan_iter(match=keys.event("*"), count=1000)):
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError("events did not expire in time")


def memory_run(client: redis.Redis, events: int) -> dict[str, Any]:
    keys = Keys(PREFIX)
    baseline = used_memory(client)
    unit_ids = accept_all(client, keys, events)
    fulfil_all(client, Ledger(client, keys), unit_ids)
    before, keys_before = prefix_bytes(client)
    used_before = used_memory(client) - baseline
    retention = Retention(client, keys, RetentionPolicy(1, 400 * 86_400))
    close_seconds = 0.0
    client.config_resetstat()
    while client.scard(keys.closing):
        started = time.perf_counter()
        retention.close_waiting(now=time.time(), limit=1_000)
        close_seconds += time.perf_counter() - started
    close_redis_usec = script_usec(client)
    expired_after = wait_expired(client, keys)
    try:
        client.memory_purge()  # give freed pages back (jemalloc); a no-op elsewhere
    except redis.ResponseError:
        pass
    after, keys_after = prefix_bytes(client)
    used_after = used_memory(client) - baseline
    return {
        "events": events,
        "bytes_per_event_before": before / events,
        "bytes_per_event_after": after / events,
        "keys_before": keys_before,
        "keys_after": keys_after,
        "used_memory_per_event_before": used_before / events,
        "used_memory_per_event_after": used_after / events,
        "close_ms_per_event": close_seconds * 1000 / events,
        "close_redis_us_per_event": close_redis_usec / events,
        "expired_within_s": round(expired_after, 1),
    }


def cost_run(client: redis.Redis, units: int, rounds: int) -> dict[str, Any]:
    """finish() with and without queueing for retention, in alternating rounds."""
    if _QUEUEING not in ledger_module._FINISH:
        raise RuntimeError("the ledger's finish script changed: update _QUEUEING")
    with_queue: list[float] = []
    without: list[float] = []
    for round_no in range(rounds):
        for queueing in (True, False) if round_no % 2 == 0 else (False, True):
            keys = Keys(f"{PREFIX}cost{round_no}{int(queueing)}")
            ledger = Ledger(client, keys)
            if not queueing:
                ledger._finish = client.register_script(
                    ledger_module._FINISH.replace(_QUEUEING, "")
                )
            unit_ids = accept_all(client, keys, units)
            spent = fulfil_all(client, ledger, unit_ids)
            (with_queue if queueing else without).append(spent / units)
            for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
                client.delete(key)
    return {
        "finish_us_with_queueing": statistics.median(with_queue),
        "finish_us_without": statistics.median(without),
        "rounds": rounds,
        "units_per_round": units,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument("--events", type=int, default=5_000, help="events for the bytes figure")
    parser.add_argument("--cost-units", type=int, default=2_000, help="units per cost round")
    parser.add_argument("--rounds", type=int, default=6, help="alternating cost rounds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rr-bench-retention-") as workdir:
        server = PrivateRedis(Path(workdir), fsync="off")
        try:
            client = redis.Redis.from_url(server.start())
            memory = memory_run(client, args.events)
            cost = cost_run(client, args.cost_units, args.rounds)
            version = client.info("server")["redis_version"]
            client.close()
        finally:
            server.stop()
    close_us = memory["close_redis_us_per_event"]
    ratio = (cost["finish_us_with_queueing"] + close_us) / cost["finish_us_without"]
    result = {"redis_version": version, **memory, **cost, "expiry_cost_ratio": ratio}
    print(f"redis-server {version}, {memory['events']} events, one unit each")
    print(
        f"bytes per event (MEMORY USAGE, all keys under the prefix): "
        f"{memory['bytes_per_event_before']:.0f} before retention, "
        f"{memory['bytes_per_event_after']:.0f} after "
        f"({memory['keys_before']} → {memory['keys_after']} keys)"
    )
    print(
        f"used_memory growth per event: {memory['used_memory_per_event_before']:.0f} before,"
        f" {memory['used_memory_per_event_after']:.0f} after"
    )
    print(
        f"Redis CPU of the terminal transition (finish script): {cost['finish_us_without']:.1f}"
        f" us without the retention queueing, {cost['finish_us_with_queueing']:.1f} us with"
        f" it; the close script {close_us:.1f} us per event; ratio {ratio:.2f}"
    )
    print(
        f"(wall clock of the close work, client side: {memory['close_ms_per_event'] * 1000:.0f}"
        f" us per event in pipelines of 1,000)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"retention-{stamp}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
