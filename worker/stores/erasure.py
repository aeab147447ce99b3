"""Erasure: remove one customer's personal data from every record the project keeps.

Stage: operator action (admin API ``POST /erasures``, ``rewardrelay erase``). The
customer's events are found through their erasure index (``personal_data``: a set named
by the keyed hash of the address, written by the inbox when the event was accepted), so an
erasure reads only that customer's records, never the whole store. For each event:

* the body keeps its envelope and reward lines only (``redact_body``); units keep their
  ids, states, provider references and routing keys, not fields about the person;
* attempt histories, dead letters and the audit logs (dead letters, code reveals) are
  redacted by design;
  any value that still contains the address is rewritten all the same;
* the sources' bookkeeping and the Coniq loop-back queue (``SideRecord``, described by
  the tasks layer) are checked the same way; a loop-back record still queued is dropped:
  its event no longer says whom to record the reward for.

Ids, states, fingerprints and dedupe markers stay, so a redelivery is still answered
``200 duplicate``. A unit still in flight (pending, submitting, retrying...) refuses the
whole erasure with the units named (``InFlightError``, 409 at the API): its attempt may be
reading the address this very moment, and a refusal the operator retries is better than a
request held open for as long as a retry horizon. The erasure is audited in
``{prefix}:erasures`` under the keyed hash, never the address.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from worker.stores.codec import text, text_map
from worker.stores.keys import Keys
from worker.stores.models import TERMINAL_STATES
from worker.stores.personal_data import (
    SubjectHasher,
    SubjectKind,
    normalise,
    redact_body,
    redact_match,
    scrub_text,
    subjects_of,
)

__all__ = ["Erasure", "ErasureReport", "InFlightError", "SideRecord"]

WATCH_RETRIES = 5  # an event changing under an erasure this often is still in flight
AUDIT_LOG_CHUNK = 500  # entries of the dead-letter audit log read at a time
_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


class InFlightError(Exception):
    """Some of the customer's units are not finished; nothing of theirs was erased."""

    def __init__(self, units: dict[str, str], report: ErasureReport | None = None) -> None:
        super().__init__(f"{len(units)} unit(s) still in flight")
        self.units = units
        self.report = report  # what was erased before a unit was found in flight, if any


@dataclass(frozen=True)
class SideRecord:
    """A hash or set outside the ledger with entries per event or unit id.

    ``drop``: remove the customer's entries (a queue of work about them); otherwise only
    rewrite a value that contains their address.
    """

    label: str
    key: str
    kind: Literal["hash", "set"]
    by: Literal["event", "unit"]
    drop: bool = False


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure changed, by record kind; ``subject`` is the keyed hash."""

    subject: str
    kind: SubjectKind
    at: float
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "kind": self.kind.value, "at": self.at, **self.counts}


COUNTED = (
    "events",
    "units",
    "attempts",
    "dead_letters",
    "dead_letter_log",
    "code_reveal_log",
    "source_progress",
    "coniq_loopback",
    "index_entries",
)


class Erasure:
    """Finds a customer's records by their keyed hash and removes their personal data."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        hasher: SubjectHasher,
        side_records: Sequence[SideRecord] = (),
    ) -> None:
        self._redis = client
        self._keys = keys
        self._hasher = hasher
        self._side = tuple(side_records)

    def erase(
        self, kind: SubjectKind, value: str, *, actor: str, now: float | None = None
    ) -> ErasureReport:
        """Erase the customer named by ``value``; counts of what changed.

        Raises:
            InFlightError: some unit of theirs is not finished (nothing was erased).
            redis.RedisError: the store is unreachable (an erasure is safe to repeat).
        """
        now = time.time() if now is None else now
        digest = self._hasher.digest(kind, value)
        index = self._keys.subject(digest)
        event_ids = sorted(text(raw) for raw in self._redis.smembers(index))
        in_flight: dict[str, str] = {}
        for event_id in event_ids:
            in_flight.update(self._unfinished(event_id))
        if in_flight:
            raise InFlightError(in_flight)
        counts: Counter[str] = Counter({name: 0 for name in COUNTED})
        needles = {normalise(kind, value)} if kind is SubjectKind.EMAIL else set()
        erased_events: list[str] = []
        erased_units: list[str] = []
        late: dict[str, str] = {}  # units replayed between the check and their erasure
        for event_id in event_ids:
            try:
                erased_units += self._erase_event(event_id, digest, needles, counts)
                erased_events.append(event_id)
            except InFlightError as exc:
                late.update(exc.units)
        self._erase_side_records(erased_events, erased_units, needles, counts)
        units = set(erased_units)
        counts["dead_letter_log"] += self._scrub_log(
            self._keys.dead_letter_log, "id", units, needles
        )
        counts["code_reveal_log"] += self._scrub_log(
            self._keys.code_reveals, "unit_id", units, needles
        )
        if not late:
            self._redis.delete(index)
        elif erased_events:  # keep the index for what is left to erase
            self._redis.srem(index, *erased_events)
        counts["index_entries"] = len(erased_events)
        report = ErasureReport(digest, kind, now, dict(counts))
        entry = {"action": "erase", "actor": actor, "complete": not late, **report.to_dict()}
        self._redis.rpush(self._keys.erasures, json.dumps(entry, sort_keys=True))
        if late:
            raise InFlightError(late, report)
        return report

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self._redis.lrange(self._keys.erasures, -limit, -1)]

    # -- one event --------------------------------------------------------------------

    def _unit_ids(self, event_id: str) -> list[str] | None:
        raw = self._redis.hget(self._keys.event(event_id), "units")
        return None if raw is None else list(json.loads(text(raw)))

    def _unfinished(self, event_id: str) -> dict[str, str]:
        unit_ids = self._unit_ids(event_id) or []
        pipe = self._redis.pipeline(transaction=False)
        for unit_id in unit_ids:
            pipe.hget(self._keys.unit(unit_id), "state")
        states = [text(raw) if raw is not None else "" for raw in pipe.execute()]
        return {uid: state for uid, state in zip(unit_ids, states, strict=True) if _open(state)}

    def _erase_event(
        self, event_id: str, digest: str, needles: set[str], counts: Counter[str]
    ) -> list[str]:
        """Redact one event and its units atomically (WATCH: a unit replayed meanwhile
        is caught and refuses). Returns the event's unit ids ([] if it expired)."""
        event_key = self._keys.event(event_id)
        for _ in range(WATCH_RETRIES):
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(event_key)  # type: ignore[no-untyped-call]
                    raw_event = text_map(pipe.hgetall(event_key))
                    if not raw_event:
                        return []
                    unit_ids: list[str] = json.loads(raw_event.get("units", "[]"))
                    unit_keys = [self._keys.unit(uid) for uid in unit_ids]
                    letter_keys = [self._keys.dead_letter(uid) for uid in unit_ids]
                    if unit_keys:
                        pipe.watch(*unit_keys, *letter_keys)  # type: ignore[no-untyped-call]
                    units = [text_map(pipe.hgetall(key)) for key in unit_keys]
                    unfinished = {
                        uid: unit.get("state", "")
                        for uid, unit in zip(unit_ids, units, strict=True)
                        if _open(unit.get("state", ""))
                    }
                    if unfinished:
                        raise InFlightError(unfinished)
                    body = json.loads(raw_event.get("body") or "{}")
                    local = needles | _emails_in(raw_event, body)
                    attempts = [pipe.lrange(self._keys.attempts(uid), 0, -1) for uid in unit_ids]
                    letters = [text_map(pipe.hgetall(key)) for key in letter_keys]
                    pipe.multi()
                    step: Counter[str] = Counter()
                    pipe.hset(event_key, "body", json.dumps(redact_body(body, local)))
                    # Others the event named keep their index entry (retention expires it).
                    others = [d for d in raw_event.get("subjects", "").split() if d != digest]
                    if others:
                        pipe.hset(event_key, "subjects", " ".join(others))
                    else:
                        pipe.hdel(event_key, "subjects")
                    step["events"] += 1
                    for uid, unit, history, letter in zip(
                        unit_ids, units, attempts, letters, strict=True
                    ):
                        step += self._redact_unit(pipe, uid, unit, history, letter, local)
                    pipe.execute()
                except redis.WatchError:
                    continue
            counts.update(step)
            return unit_ids
        raise InFlightError({event_id: "changing"})

    def _redact_unit(
        self,
        pipe: Any,
        unit_id: str,
        unit: dict[str, str],
        history: list[Any],
        letter: dict[str, str],
        needles: set[str],
    ) -> Counter[str]:
        step: Counter[str] = Counter()
        match = json.loads(unit.get("match") or "{}")
        redacted = redact_match(match)
        changed = redacted != match
        if changed:
            pipe.hset(self._keys.unit(unit_id), "match", json.dumps(redacted, sort_keys=True))
        for name, value in unit.items():
            if name != "match" and (clean := scrub_text(value, needles)) is not None:
                pipe.hset(self._keys.unit(unit_id), name, clean)
                changed = True
        step["units"] += int(changed)
        for position, raw in enumerate(history):
            if (clean := scrub_text(text(raw), needles)) is not None:
                pipe.lset(self._keys.attempts(unit_id), position, clean)
                step["attempts"] += 1
        letter_changed = False
        for name, value in letter.items():
            if (clean := scrub_text(value, needles)) is not None:
                pipe.hset(self._keys.dead_letter(unit_id), name, clean)
                letter_changed = True
        step["dead_letters"] += int(letter_changed)
        return step

    # -- outside the ledger -------------------------------------------------------------

    def _erase_side_records(
        self,
        event_ids: Iterable[str],
        unit_ids: Iterable[str],
        needles: set[str],
        counts: Counter[str],
    ) -> None:
        ids = {"event": list(event_ids), "unit": list(unit_ids)}
        for record in self._side:
            members = ids[record.by]
            if not members:
                continue
            if record.kind == "set":
                if record.drop:
                    removed = self._redis.srem(record.key, *members)
                    counts[record.label] += int(removed)
                continue
            values = self._redis.hmget(record.key, members)
            for member, raw in zip(members, values, strict=True):
                if raw is None:
                    continue
                if record.drop:
                    counts[record.label] += int(self._redis.hdel(record.key, member))
                elif (clean := scrub_text(text(raw), needles)) is not None:
                    self._redis.hset(record.key, member, clean)
                    counts[record.label] += 1

    def _scrub_log(self, log_key: str, id_field: str, unit_ids: set[str], needles: set[str]) -> int:
        """Rewrite the customer's entries of an audit log (the dead-letter log, the code
        reveal log: operators' free-text reasons) that contain their address; walked in
        chunks."""
        if not unit_ids or not needles:
            return 0
        changed, start = 0, 0
        while True:
            chunk = self._redis.lrange(log_key, start, start + AUDIT_LOG_CHUNK - 1)
            for offset, raw in enumerate(chunk):
                entry = text(raw)
                try:
                    about = str(json.loads(entry).get(id_field, ""))
                except (ValueError, AttributeError):
                    about = ""
                if about in unit_ids and (clean := scrub_text(entry, needles)) is not None:
                    self._redis.lset(log_key, start + offset, clean)
                    changed += 1
            if len(chunk) < AUDIT_LOG_CHUNK:
                return changed
            start += AUDIT_LOG_CHUNK


def _open(state: str) -> bool:
    """A unit whose attempt may still read the event (a missing unit has expired)."""
    return bool(state) and state not in _TERMINAL


def _emails_in(raw_event: dict[str, str], body: Any) -> set[str]:
    """Every email address in the event, normalised: erasing by customer id also finds
    the address the same event carried, wherever it is echoed."""
    found = subjects_of(raw_event.get("source", ""), raw_event.get("type", ""), body)
    return {normalise(kind, value) for kind, value in found if kind is SubjectKind.EMAIL}
