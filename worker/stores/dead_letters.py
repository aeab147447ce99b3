"""Dead letters: units that could not be fulfilled, kept with their reason, replayable.

A letter's id is its unit's id, so a unit has at most one letter and a replay goes back
through the same ledger entry and provider key: replaying can never issue twice. A letter
holds only redacted facts (reason, provider, error type, status code), never codes,
tokens or personal data; discards and replays are appended to an audit log.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from worker.stores.codec import text, text_map
from worker.stores.keys import Keys

__all__ = ["DeadLetters", "DeadLetter", "LetterStatus", "ReplayResult"]

# Move a waiting letter's unit back to the scheduler. A unit that ever reached a provider
# goes to UNKNOWN, so its next attempt looks the key up before it may resubmit.
_REPLAY = """
local letter, unit, live, index, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local uid, now, actor, dry, at, rules = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('HGET', letter, 'status') ~= 'waiting' then return 'not-waiting' end
local state = redis.call('HGET', unit, 'state')
if state ~= 'dead_lettered' and state ~= 'unroutable' then return 'not-dead' end
if state == 'unroutable' and rules ~= ''
  and redis.call('HGET', letter, 'rules_fingerprint') == rules then return 'rules-unchanged' end
if dry == '1' then return 'would-replay' end
local attempts = tonumber(redis.call('HGET', unit, 'attempts') or '0')
local next_state = 'pending'
if attempts > 0 and state == 'dead_lettered' then next_state = 'unknown' end
redis.call('HSET', unit, 'state', next_state, 'round_attempts', 0, 'first_attempt_at', 0,
  'next_attempt_at', 0, 'updated_at', now)
redis.call('ZADD', live, at, uid)
redis.call('HSET', letter, 'status', 'replayed', 'replayed_at', now)
redis.call('ZREM', index, uid)
redis.call('RPUSH', log, cjson.encode({action='replay', id=uid, at=tonumber(now), actor=actor}))
return 'replayed'
"""

_DISCARD = """
local letter, index, log, closing = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local uid, now, actor, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', letter, 'status') ~= 'waiting' then return 'not-waiting' end
redis.call('HSET', letter, 'status', 'discarded', 'discarded_at', now, 'discard_reason', reason)
redis.call('ZREM', index, uid)
-- Handled: retention may now close the event (a waiting letter never expires).
redis.call('SADD', closing, redis.call('HGET', letter, 'event_id') or '')
redis.call('RPUSH', log, cjson.encode({action='discard', id=uid, at=tonumber(now), actor=actor,
  reason=reason}))
return 'discarded'
"""


class LetterStatus(enum.StrEnum):
    WAITING = "waiting"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class ReplayResult(enum.StrEnum):
    REPLAYED = "replayed"
    WOULD_REPLAY = "would-replay"
    NOT_WAITING = "not-waiting"
    NOT_DEAD = "not-dead"
    NOT_FOUND = "not-found"
    RULES_UNCHANGED = "rules-unchanged"  # unroutable, and the rules still decide the same


@dataclass(frozen=True)
class DeadLetter:
    id: str
    event_id: str
    source: str
    provider: str
    product: str
    reason: str
    error_type: str
    status_code: int | None
    detail: str
    attempts: int
    created_at: float
    status: LetterStatus
    times: int
    # The provider's own error message, redacted (``tasks.http.redaction.redact_message``).
    provider_message: str = ""
    # Unroutable letters: the routing field and value no rule matched, the rules file, and
    # the fingerprint of the rules that decided (a replay under the same rules is refused).
    unrouted_field: str = ""
    unrouted_value: str = ""
    rules_file: str = ""
    rules_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["status"] = self.status.value
        return out

    def summary(self) -> dict[str, Any]:
        """What a listing shows: no free text from a provider, however redacted."""
        out = self.to_dict()
        del out["provider_message"]
        return out

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> DeadLetter:
        code = raw.get("status_code", "")
        return cls(
            id=raw["id"],
            event_id=raw.get("event_id", ""),
            source=raw.get("source", ""),
            provider=raw.get("provider", ""),
            product=raw.get("product", ""),
            reason=raw.get("reason", ""),
            error_type=raw.get("error_type", ""),
            status_code=int(code) if code else None,
            detail=raw.get("detail", ""),
            attempts=int(raw.get("attempts", "0")),
            created_at=float(raw.get("created_at", "0")),
            status=LetterStatus(raw.get("status", "waiting")),
            times=int(raw.get("times", "1")),
            provider_message=raw.get("provider_message", ""),
            unrouted_field=raw.get("unrouted_field", ""),
            unrouted_value=raw.get("unrouted_value", ""),
            rules_file=raw.get("rules_file", ""),
            rules_fingerprint=raw.get("rules_fingerprint", ""),
        )


class DeadLetters:
    """Read, replay and discard dead letters (writing happens in ``Ledger.finish``)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._replay = client.register_script(_REPLAY)
        self._discard = client.register_script(_DISCARD)

    def get(self, letter_id: str) -> DeadLetter | None:
        raw = self._redis.hgetall(self._keys.dead_letter(letter_id))
        if not raw:
            return None
        return DeadLetter.from_hash(text_map(raw))

    def waiting_count(self) -> int:
        return int(self._redis.zcard(self._keys.dead_letters))

    def iter_waiting(
        self,
        *,
        source: str | None = None,
        provider: str | None = None,
        reason: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> Iterator[DeadLetter]:
        """Waiting letters, oldest first, filtered."""
        ids = self._redis.zrangebyscore(
            self._keys.dead_letters, since if since is not None else "-inf", "+inf"
        )
        yielded = 0
        for chunk_start in range(0, len(ids), 200):
            pipe = self._redis.pipeline(transaction=False)
            for raw_id in ids[chunk_start : chunk_start + 200]:
                pipe.hgetall(self._keys.dead_letter(text(raw_id)))
            for raw in pipe.execute():
                if not raw:
                    continue
                letter = DeadLetter.from_hash(text_map(raw))
                if letter.status is not LetterStatus.WAITING:
                    continue
                if source and letter.source != source:
                    continue
                if provider and letter.provider != provider:
                    continue
                if reason and letter.reason != reason:
                    continue
                yield letter
                yielded += 1
                if limit is not None and yielded >= limit:
                    return

    def replay(
        self,
        letter_id: str,
        *,
        now: float,
        actor: str = "api",
        dry_run: bool = False,
        at: float | None = None,
        rules_fingerprint: str = "",
    ) -> ReplayResult:
        """Put the unit back on the schedule (due at ``at``, default now) under its key.

        The scheduler publishes it when due; a bulk replay spreads ``at`` to cap the rate.
        ``rules_fingerprint``: the rules a worker would route with now; an unroutable
        letter written under the same rules is refused (``RULES_UNCHANGED``), since the
        replay could only dead-letter it again. Empty: no check (a forced replay).
        """
        if not self._redis.exists(self._keys.dead_letter(letter_id)):
            return ReplayResult.NOT_FOUND
        result = self._replay(
            keys=[
                self._keys.dead_letter(letter_id),
                self._keys.unit(letter_id),
                self._keys.live,
                self._keys.dead_letters,
                self._keys.dead_letter_log,
            ],
            args=[
                letter_id,
                now,
                actor,
                "1" if dry_run else "0",
                now if at is None else at,
                rules_fingerprint,
            ],
        )
        return ReplayResult(text(result))

    def discard(self, letter_id: str, *, now: float, actor: str = "api", reason: str = "") -> bool:
        """Mark a waiting letter discarded (recorded in the audit log). False if not waiting."""
        result = self._discard(
            keys=[
                self._keys.dead_letter(letter_id),
                self._keys.dead_letters,
                self._keys.dead_letter_log,
                self._keys.closing,
            ],
            args=[letter_id, now, actor, reason[:200]],
        )
        return text(result) == "discarded"

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self._redis.lrange(self._keys.dead_letter_log, -limit, -1)]
