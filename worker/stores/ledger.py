"""Ledger: one entry per reward unit, moved between states by atomic Lua transitions.

``begin`` is the only way into SUBMITTING and hands out a fenced attempt number: two
deliveries of the same unit can never both hold it, and a late finisher whose lease was
taken over cannot overwrite the newer attempt. Every non-terminal unit sits in the
``live`` sorted set scored by when it next needs attention, which is what the scheduler
sweeps: due retries, deliveries to follow up, and units whose task message was lost.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis

from worker.stores.codec import text, text_map
from worker.stores.crypto import CodeKeyError, CodeVault, SealedCodes, is_sealed
from worker.stores.keys import Keys
from worker.stores.models import AttemptOutcome, Unit, UnitState

__all__ = ["Ledger", "Begin", "BeginDecision", "AttemptRecord", "Rotation"]

# Codes live in the unit hash as a sealed token (``codes``) beside their masked form.
SEALED_FIELD = "codes"
MASKED_FIELD = "codes_masked"

# Replace a unit's sealed codes only if they are still what was read (a concurrent rotation
# or a re-fulfilment wins; this one counts it as done elsewhere).
_RESEAL = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# Codes stored in clear by a release before sealing (a JSON list in ``codes``, links in
# ``links``): sealed in place, compare-and-set like a re-seal.
_SEAL_PLAIN = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[4], ARGV[5])
redis.call('HDEL', KEYS[1], 'links')
return 1
"""

# Record who revealed what before the codes are read: no audit entry, no reveal.
_AUDIT_REVEAL = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return nil end
redis.call('RPUSH', KEYS[2], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""

_BEGIN = """
local unit, live = KEYS[1], KEYS[2]
local uid, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', unit, 'state', 'lease_until', 'next_attempt_at', 'first_attempt_at')
local state = h[1]
if not state then return {'missing', '0', ''} end
if state == 'fulfilled' or state == 'dead_lettered' or state == 'unroutable'
   or state == 'ignored' then
  return {'terminal', '0', state}
end
if state == 'submitting' and tonumber(h[2] or '0') > now then return {'busy', '0', state} end
if (state == 'retrying' or state == 'unknown' or state == 'awaiting_delivery')
   and tonumber(h[3] or '0') > now + 0.05 then
  return {'early', '0', state}
end
local mode = 'submit'
if state == 'submitting' or state == 'unknown' then mode = 'lookup'
elseif state == 'awaiting_delivery' then mode = 'follow' end
local attempt = redis.call('HINCRBY', unit, 'attempts', 1)
redis.call('HINCRBY', unit, 'round_attempts', 1)
redis.call('HSET', unit, 'state', 'submitting', 'lease_until', now + lease,
  'updated_at', now, 'mode', mode)
if not h[4] or h[4] == '' or h[4] == '0' then
  redis.call('HSET', unit, 'first_attempt_at', now)
end
redis.call('ZADD', live, now + lease, uid)
-- What the attempt needs next, in the same round trip: the unit as it now stands and the
-- body of its event (for the recipient).
local event_id = redis.call('HGET', unit, 'event_id')
local body = false
if event_id then body = redis.call('HGET', KEYS[3] .. event_id, 'body') end
return {mode, tostring(attempt), state, redis.call('HGETALL', unit), body or ''}
"""

# Fenced: only the holder of the current attempt number may finish it.
_FINISH = """
local unit, live, attempts_list, extra_index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local uid, attempt, new_state, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local live_score, record = ARGV[5], ARGV[6]
local cur = redis.call('HMGET', unit, 'attempts', 'state')
if cur[1] ~= attempt or cur[2] ~= 'submitting' then return 0 end
redis.call('HSET', unit, 'state', new_state, 'updated_at', now)
redis.call('HDEL', unit, 'lease_until')
local n = tonumber(ARGV[7])
for i = 1, n do
  redis.call('HSET', unit, ARGV[6 + 2 * i], ARGV[7 + 2 * i])
end
redis.call('RPUSH', attempts_list, record)
if live_score == '' then
  redis.call('ZREM', live, uid)
else
  redis.call('ZADD', live, live_score, uid)
end
if extra_index ~= '' and extra_index ~= live then
  redis.call('ZADD', extra_index, now, uid)
end
local base = 8 + 2 * n
local m = tonumber(ARGV[base] or '0')
if m > 0 then
  for i = 1, m do
    redis.call('HSET', KEYS[5], ARGV[base - 1 + 2 * i], ARGV[base + 2 * i])
  end
  redis.call('HINCRBY', KEYS[5], 'times', 1)
  redis.call('ZADD', KEYS[6], now, uid)
end
-- Finished for good: retention may close the event if this was its last open unit.
if new_state == 'fulfilled' or new_state == 'ignored' then
  redis.call('SADD', KEYS[7], redis.call('HGET', unit, 'event_id') or '')
end
return 1
"""


class BeginDecision(enum.StrEnum):
    SUBMIT = "submit"  # first contact: send the order with the unit's key
    LOOKUP = "lookup"  # outcome unknown: look the key up at the provider first
    FOLLOW = "follow"  # provider accepted: poll the order until delivered
    MISSING = "missing"
    TERMINAL = "terminal"
    BUSY = "busy"  # another delivery holds an unexpired lease
    EARLY = "early"  # a retry is scheduled later than now

    @property
    def proceeds(self) -> bool:
        return self in (BeginDecision.SUBMIT, BeginDecision.LOOKUP, BeginDecision.FOLLOW)


@dataclass(frozen=True)
class Begin:
    """``begin``'s answer; when it proceeds, also the unit as it now stands and the JSON
    body of its event ("" if the event is gone), read in the same round trip."""

    decision: BeginDecision
    attempt: int
    previous_state: str
    unit: Unit | None = None
    event_body: str = ""


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt in a unit's history. Holds only redacted, metric-safe facts."""

    attempt: int
    at: float
    mode: BeginDecision  # submit | lookup | follow
    outcome: AttemptOutcome
    duration_ms: int = 0
    error_type: str = ""
    reason: str = ""
    status_code: int | None = None
    task_id: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass(frozen=True)
class Rotation:
    """What ``rotate_codes`` did: units re-sealed, already under the first key, unreadable,
    and units whose codes were still in clear (from before sealing) and are now sealed."""

    resealed: int
    current: int
    unreadable: tuple[str, ...]
    sealed_plain: int = 0


class Ledger:
    """The per-unit record of what happened and what happens next.

    ``vault`` seals issued codes before they are written and opens them for an audited
    reveal; a ledger without one can do everything else (masked codes need no key).
    """

    def __init__(self, client: redis.Redis, keys: Keys, vault: CodeVault | None = None) -> None:
        self._redis = client
        self._keys = keys
        self._vault = vault or CodeVault(())
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)
        self._reseal = client.register_script(_RESEAL)
        self._audit_reveal = client.register_script(_AUDIT_REVEAL)
        self._seal_plain = client.register_script(_SEAL_PLAIN)

    def begin(self, unit_id: str, *, now: float, lease_seconds: float) -> Begin:
        """Try to take the unit for one attempt (atomic; see module docstring)."""
        reply = self._begin(
            keys=[self._keys.unit(unit_id), self._keys.live, self._keys.event("")],
            args=[unit_id, now, lease_seconds],
        )
        decision = BeginDecision(text(reply[0]))
        begun = Begin(decision, int(text(reply[1])), text(reply[2]))
        if not decision.proceeds:
            return begun
        flat = [text(item) for item in reply[3]]
        unit = Unit.from_hash(unit_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        return replace(begun, unit=unit, event_body=text(reply[4]))

    def finish(
        self,
        unit_id: str,
        attempt: int,
        state: UnitState,
        record: AttemptRecord,
        *,
        now: float,
        next_check_at: float | None,
        fields: Mapping[str, str | float | int] | None = None,
        index: str = "",
        dead_letter: Mapping[str, str | float | int] | None = None,
    ) -> bool:
        """Close the current attempt; False when the attempt was superseded (fenced out).

        ``next_check_at`` is when the scheduler should look at the unit again; ``None``
        removes it from the live set (terminal states). ``dead_letter`` fields, when
        given, are written to the unit's dead letter in the same atomic step.
        """
        pairs: list[str | float | int] = []
        for name, value in (fields or {}).items():
            pairs += [name, value]
        letter: list[str | float | int] = []
        for name, value in (dead_letter or {}).items():
            letter += [name, value]
        done = self._finish(
            keys=[
                self._keys.unit(unit_id),
                self._keys.live,
                self._keys.attempts(unit_id),
                index or self._keys.live,
                self._keys.dead_letter(unit_id),
                self._keys.dead_letters,
                self._keys.closing,
            ],
            args=[
                unit_id,
                attempt,
                state.value,
                now,
                "" if next_check_at is None else next_check_at,
                record.to_json(),
                len(pairs) // 2,
                *pairs,
                len(letter) // 2,
                *letter,
            ],
        )
        return bool(done)

    def first_time_in(self, unit_id: str, state: UnitState) -> bool:
        """True the first time the unit reaches terminal ``state``, False after that.

        A marker field on the unit, which a replay keeps: a dead letter replayed and
        dead-lettered again is one dead-lettered unit, not two, in the terminal counter.
        """
        return bool(self._redis.hsetnx(self._keys.unit(unit_id), f"counted_{state.value}", 1))

    def get(self, unit_id: str) -> Unit | None:
        raw = self._redis.hgetall(self._keys.unit(unit_id))
        if not raw:
            return None
        return Unit.from_hash(unit_id, text_map(raw))

    def get_many(self, unit_ids: Iterable[str]) -> list[Unit]:
        ids = list(unit_ids)
        pipe = self._redis.pipeline(transaction=False)
        for uid in ids:
            pipe.hgetall(self._keys.unit(uid))
        units = []
        for uid, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                units.append(Unit.from_hash(uid, text_map(raw)))
        return units

    def field(self, unit_id: str, name: str) -> str | None:
        value = self._redis.hget(self._keys.unit(unit_id), name)
        return None if value is None else text(value)

    def round_attempts(self, unit_id: str) -> int:
        return int(self.field(unit_id, "round_attempts") or 0)

    def attempts(self, unit_id: str) -> list[dict[str, Any]]:
        raw = self._redis.lrange(self._keys.attempts(unit_id), 0, -1)
        return [json.loads(item) for item in raw]

    def sealed_fields(self, codes: Iterable[str], links: Iterable[str]) -> dict[str, str]:
        """The unit fields that record issued codes and links: sealed, plus the masks.

        Raises:
            CodeKeyError: no ``CODE_KEYS`` to seal with.
        """
        sealed = SealedCodes(tuple(codes), tuple(links))
        return {SEALED_FIELD: self._vault.seal(sealed), MASKED_FIELD: json.dumps(sealed.masked)}

    def codes(self, unit_id: str) -> list[str]:
        """The issued reward codes, masked (``****WXYZ``): what any view may show."""
        raw = self.field(unit_id, MASKED_FIELD)
        return list(json.loads(raw)) if raw else []

    def reveal(self, unit_id: str, *, actor: str, reason: str, now: float) -> SealedCodes | None:
        """The unit's full codes and links, after recording who asked, when and why.

        None when the unit has no codes. The audit entry is written first and atomically
        with the read, so no reveal goes unrecorded (one that then fails to open is still
        recorded: it was asked for).

        Raises:
            CodeKeyError: none of ``CODE_KEYS`` opens the stored token.
        """
        entry = json.dumps(
            {"action": "reveal", "unit_id": unit_id, "actor": actor, "reason": reason, "at": now}
        )
        token = self._audit_reveal(
            keys=[self._keys.unit(unit_id), self._keys.code_reveals], args=[SEALED_FIELD, entry]
        )
        if token is None:
            return None
        return self._vault.open(text(token))

    def reveal_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest reveals, oldest first."""
        return [json.loads(x) for x in self._redis.lrange(self._keys.code_reveals, -limit, -1)]

    def rotate_codes(self, batch: int = 500) -> Rotation:
        """Re-seal every unit's codes under the first key of ``CODE_KEYS``.

        Safe to run while workers write (each unit is compare-and-set) and to run again
        (a unit already under the first key is left as it is). Units no key opens are
        listed, not touched. Codes a release before sealing stored in clear are sealed.
        """
        resealed = current = sealed_plain = 0
        unreadable: list[str] = []
        marker = self._keys.unit("")
        for key in self._redis.scan_iter(match=self._keys.unit("*"), count=batch):
            name = text(key)
            if name.endswith(":attempts"):
                continue
            token = self._redis.hget(name, SEALED_FIELD)
            if token is None:
                continue
            old = text(token)
            if not is_sealed(old):
                sealed_plain += self._seal_in_place(name, old)
                continue
            try:
                new = self._vault.reseal(old)
            except CodeKeyError:
                unreadable.append(name[len(marker) :])
                continue
            if new == old:
                current += 1
            elif self._reseal(keys=[name], args=[SEALED_FIELD, old, new]):
                resealed += 1
        return Rotation(resealed, current, tuple(sorted(unreadable)), sealed_plain)

    def _seal_in_place(self, name: str, plain: str) -> int:
        """Seal one unit's clear codes (and its ``links`` field); 1 if this call did."""
        links = self._redis.hget(name, "links")
        fields = self.sealed_fields(json.loads(plain), json.loads(text(links)) if links else [])
        sealed = self._seal_plain(
            keys=[name],
            args=[SEALED_FIELD, plain, fields[SEALED_FIELD], MASKED_FIELD, fields[MASKED_FIELD]],
        )
        return int(sealed)

    def due(self, now: float | None = None, limit: int = 100) -> list[str]:
        now = time.time() if now is None else now
        return [text(v) for v in self._redis.zrangebyscore(self._keys.live, "-inf", now, 0, limit)]
