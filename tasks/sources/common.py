"""Reward sources, shared plumbing: Redis key names, the per-source lock and poll reports.

Stage: producers (worker side). Each source keeps its progress in Redis under the
deployment's key prefix, so a restarted worker resumes where the last run stopped. Beat may
start a poll while the previous one still runs (a slow provider, a long page walk): a
per-source lock makes the second one return at once instead of emitting in parallel.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks.sources.emit import EmitResult, Emitter, HttpEmitter
from worker.config import Settings
from worker.stores.codec import text
from worker.stores.keys import Keys
from worker.stores.models import UnitState
from worker.stores.refused import hold_value

__all__ = [
    "hold_again",
    "EventOutcome",
    "PollReport",
    "SourceKeys",
    "event_outcome",
    "source_emitter",
    "source_lock",
]

log = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 300  # a crashed poller's lock expires; a run never takes this long
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class SourceKeys:
    """Key names of one source, under the deployment prefix (``{prefix}:source:{name}:*``)."""

    keys: Keys
    source: str

    def _key(self, suffix: str) -> str:
        return self.keys.source(self.source, suffix)

    @property
    def watermark(self) -> str:
        """Hash: how far the walk got (fields per source)."""
        return self._key("watermark")

    @property
    def emitted(self) -> str:
        """Set: source item ids already sent to the receiver (skipped by later walks)."""
        return self._key("emitted")

    @property
    def unsettled(self) -> str:
        """Hash: event id → source item id, emitted but not yet settled at the source."""
        return self._key("unsettled")

    @property
    def rejected(self) -> str:
        """Hash: event id → reason, items the receiver refused for good (for operators)."""
        return self._key("rejected")

    @property
    def failed(self) -> str:
        """Hash: item → reason, settlements the source refused for good (for operators)."""
        return self._key("failed")

    @property
    def retry(self) -> str:
        """Set: refused event ids an operator asked to emit again (the next run does)."""
        return self._key("retry")

    @property
    def discarded(self) -> str:
        """Hash: refused event ids an operator discarded (never emitted again)."""
        return self._key("discarded")

    @property
    def lock(self) -> str:
        return self.keys.lock(f"source:{self.source}")

    def token(self, name: str) -> str:
        """String: a credential the source needs across restarts (e.g. a refresh token)."""
        return self._key(f"token:{name}")


@contextmanager
def source_lock(
    client: redis.Redis, key: str, ttl_seconds: int = LOCK_TTL_SECONDS
) -> Iterator[bool]:
    """Hold ``key`` for the block; yields False (and holds nothing) if another run has it."""
    token = secrets.token_hex(16)
    acquired = bool(client.set(key, token, nx=True, ex=ttl_seconds))
    try:
        yield acquired
    finally:
        if acquired:
            client.eval(_RELEASE, 1, key, token)


@dataclass
class PollReport:
    """What one poll did; returned by the Celery task (small JSON, no personal data)."""

    source: str
    emitted: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    pages: int = 0
    settled: dict[str, int] = field(default_factory=dict)
    stopped: str = ""  # why the walk stopped early (receiver or source unavailable)
    busy: bool = False  # another run held the lock

    def count(self, result: EmitResult) -> None:
        if result is EmitResult.ACCEPTED:
            self.emitted += 1
        else:
            self.duplicates += 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def log(self, logger: logging.Logger) -> None:
        """One info line when the run did something (counts only, no personal data)."""
        if self.emitted or self.duplicates or self.rejected or self.settled:
            settled = " ".join(f"{k}={v}" for k, v in sorted(self.settled.items()))
            logger.info(
                "%s run: emitted=%d duplicates=%d rejected=%d skipped=%d pages=%d %s",
                self.source,
                self.emitted,
                self.duplicates,
                self.rejected,
                self.skipped,
                self.pages,
                settled,
            )


def run_locked(
    client: redis.Redis,
    keys: Keys,
    source: str,
    steps: Callable[[PollReport], object],
    logger: logging.Logger,
) -> PollReport:
    """One beat run of a source: ``steps`` fill the report while the source lock is held.

    Another run holding the lock makes this one a no-op (``busy``); Redis failing mid-run
    stops it, and the next beat resumes from the stored watermark.
    """
    report = PollReport(source)
    try:
        with source_lock(client, SourceKeys(keys, source).lock) as acquired:
            if not acquired:
                report.busy = True
                return report
            steps(report)
    except redis.RedisError as exc:
        report.stopped = f"redis: {type(exc).__name__}"
    if report.stopped:
        logger.warning("%s poll stopped early: %s", source, report.stopped)
    report.log(logger)
    return report


@dataclass(frozen=True)
class EventOutcome:
    """Where an emitted event's units ended: ``fulfilled``, ``discarded`` or ``open``."""

    status: str
    reason: str = ""


OPEN = EventOutcome("open")


def event_outcome(client: redis.Redis, keys: Keys, event_id: str) -> EventOutcome:
    """Judge an emitted event from the ledger and dead letters.

    ``fulfilled`` when every unit is FULFILLED; ``discarded`` when no unit is still in
    progress and at least one unit's dead letter was discarded by an operator (with the
    discard reason); otherwise ``open`` (in progress, waiting in the dead-letter store, or
    replayed). Reads only; never changes a unit.
    """
    raw_units = client.hget(keys.event(event_id), "units")
    if raw_units is None:
        return _expired_outcome(client, keys, event_id)
    unit_ids: list[str] = json.loads(text(raw_units))
    if not unit_ids:
        return OPEN
    states: list[str] = []
    discarded: list[str] = []
    for unit_id in unit_ids:
        state = client.hget(keys.unit(unit_id), "state")
        states.append(text(state) if state is not None else "")
        letter = client.hmget(keys.dead_letter(unit_id), "status", "discard_reason")
        if letter[0] is not None and text(letter[0]) == "discarded":
            discarded.append(text(letter[1]) if letter[1] is not None else "")
    if all(state == UnitState.FULFILLED for state in states):
        return EventOutcome("fulfilled")
    in_progress = any(
        state not in (UnitState.FULFILLED, UnitState.DEAD_LETTERED, UnitState.UNROUTABLE)
        for state in states
    )
    if discarded and not in_progress:
        return EventOutcome("discarded", discarded[0] or "discarded by an operator")
    return OPEN


def _expired_outcome(client: redis.Redis, keys: Keys, event_id: str) -> EventOutcome:
    """An event whose data expired under retention: its dedupe marker keeps the outcome
    (``source fingerprint f|d|c``); no marker, nothing known: open."""
    raw = client.get(keys.seen(event_id))
    outcome = text(raw).rsplit(" ", 1)[-1] if raw is not None else ""
    if outcome == "f":
        return EventOutcome("fulfilled")
    if outcome == "d":
        return EventOutcome("discarded", "discarded by an operator")
    return OPEN


_emitter_lock = threading.Lock()
_emitters: dict[str, Emitter] = {}


def source_emitter(settings: Settings) -> Emitter:
    """This process's emitter to ``RECEIVER_URL``, signed with the first EVENT_SECRETS one."""
    with _emitter_lock:
        emitter = _emitters.get(settings.receiver_url)
        if emitter is None:
            secret = settings.event_secrets[0] if settings.event_secrets else ""
            emitter = HttpEmitter(settings.receiver_url, secret)
            _emitters[settings.receiver_url] = emitter
        return emitter


def hold_again(
    client: redis.Redis, names: SourceKeys, event_id: str, reason: str, report: PollReport
) -> None:
    """A retried item the receiver refused again: held again with the new reason, and
    out of the retry set, in one round trip."""
    pipe = client.pipeline()
    pipe.hset(names.rejected, event_id, hold_value(reason, time.time()))
    pipe.srem(names.retry, event_id)
    pipe.execute()
    report.rejected += 1
