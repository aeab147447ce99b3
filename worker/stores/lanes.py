"""Provider lanes in Redis: one state per provider, shared by every worker process.

A lane is ``open`` (calls go ahead within its limits), ``broken`` (its circuit breaker
tripped: one probe unit at a time tests the provider) or ``paused`` (by an operator, or
automatically with reason ``funds`` when the provider said the money or a cap ran out;
a funds pause probes on its own every few minutes). Units of a lane that is not open are
*set aside*: their attempt is handed back (no provider call, no attempt used) and they
wait in the lane's waiting set, ordered by when they first waited, until the lane opens
and releases them oldest first.

Keys (under the deployment prefix), per lane ``{p}``:
    lane:{p}            hash   state, reason, by, since, probe_at, breaker counters,
                               token bucket, 429 slow-down
    lane:{p}:waiting    zset   unit id -> when it first waited
    lane:{p}:probe      string the unit holding the probe lease (PX TTL: a worker killed
                               mid-probe does not leave the lane stuck)
    lane:{p}:slots      zset   in-flight slot token -> lease expiry (concurrency cap)
    lanes               set    every lane name seen
    lanes:log           list   pauses, resumes and transitions, for audit (newest first)

Every decision is one Lua script, so two workers never both take the probe, the last
slot or the last token. Setting a unit aside touches its ledger hash (state, round
attempts, ``parked_at``) with the same fencing rule as ``Ledger.finish``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from worker.stores.codec import text, text_map
from worker.stores.keys import Keys

__all__ = [
    "BreakerPolicy",
    "Gate",
    "LaneLimits",
    "LaneStore",
    "LaneView",
    "Verdict",
    "LANE_STATES",
]

LANE_STATES = ("open", "broken", "paused")
FUNDS = "funds"
AUDIT_LOG_LENGTH = 1000
# After a 429 the lane's rate is halved (once per Retry-After episode) and climbs back by
# this fraction of the configured rate per second.
RECOVERY_PER_SECOND = 0.25
MIN_RATE_FACTOR = 0.05

# How fast the lane may go now: the configured rate, scaled down after a 429 and
# recovering linearly once Retry-After has passed.
_FACTOR = """
local function factor(h_slow_until, h_factor, now)
  local until_ = tonumber(h_slow_until or '0') or 0
  local f0 = tonumber(h_factor or '1') or 1
  if until_ == 0 then return 1 end
  if now < until_ then return f0 end
  return math.min(1, f0 + (now - until_) * RECOVERY)
end
"""

_ADMIT = (
    _FACTOR
    + """
local lane, waiting, probe, slots = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local unit, lanes = KEYS[5], KEYS[6]
local uid, now, name = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local max_in_flight, rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local slot_ttl, probe_ttl_ms, max_wait = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local slot_token = ARGV[10]
redis.call('SADD', lanes, name)
local h = redis.call('HMGET', lane, 'state', 'reason', 'probe_at', 'slow_until', 'slow_factor',
  'tokens', 'tokens_at')
local state = h[1] or 'open'
local role = 'unit'
if state ~= 'open' then
  local probes = state == 'broken' or (state == 'paused' and h[2] == 'funds')
  local holder = redis.call('GET', probe)
  if probes and (holder == false or holder == uid) and now >= (tonumber(h[3] or '0') or 0) then
    redis.call('SET', probe, uid, 'PX', probe_ttl_ms)
    role = 'probe'
  else
    return {'wait', state, h[2] or ''}
  end
end
local function let_go_probe()
  if role == 'probe' then redis.call('DEL', probe) end
end
local slow_until = tonumber(h[4] or '0') or 0
if now < slow_until then
  let_go_probe()
  return {'defer', tostring(slow_until - now), 'rate_limited'}
end
if max_in_flight > 0 then
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  if redis.call('ZCARD', slots) >= max_in_flight then
    let_go_probe()
    return {'defer', '0.02', 'in_flight'}
  end
end
local wait = 0
if rate > 0 then
  local r = rate * factor(h[4], h[5], now)
  local tokens = tonumber(h[6] or '') or burst
  local at = tonumber(h[7] or '') or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * r) - 1
  if tokens < 0 then wait = -tokens / r end
  if wait > max_wait then
    let_go_probe()
    return {'defer', tostring(wait), 'rate'}
  end
  redis.call('HSET', lane, 'tokens', tostring(tokens), 'tokens_at', tostring(now))
end
redis.call('ZADD', slots, now + wait + slot_ttl, slot_token)
-- The time this unit waited (lane closed, or limits) does not count against its retry
-- horizon: move its first attempt forward by as much.
local parked = tonumber(redis.call('HGET', unit, 'parked_at') or '')
local waited = 0
if parked then
  waited = math.max(0, now - parked)
  local first = tonumber(redis.call('HGET', unit, 'first_attempt_at') or '') or 0
  if first > 0 then redis.call('HSET', unit, 'first_attempt_at', tostring(first + waited)) end
  redis.call('HDEL', unit, 'parked_at')
end
redis.call('ZREM', waiting, uid)
return {role, tostring(wait), tostring(waited)}
"""
)

# An attempt handed back: fenced like Ledger.finish (only the current attempt's holder),
# the unit returns to ``restore`` state without spending its round attempt, remembers when
# it began to wait, and (``park`` = 1) joins the lane's waiting set in arrival order.
_SET_ASIDE = """
local unit, live, waiting, attempts_list = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local uid, attempt, restore, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local live_at, park, clear_first, record = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local cur = redis.call('HMGET', unit, 'attempts', 'state')
if cur[1] ~= attempt or cur[2] ~= 'submitting' then return 0 end
-- Counted apart from the attempts, which number every begin (the fencing token).
redis.call('HINCRBY', unit, 'set_asides', 1)
-- A parked unit may go the moment its lane releases it; a throttled one not before its
-- limit allows (an earlier delivery is then skipped as early, without a round trip here).
local next_at = now
if park ~= '1' then next_at = tonumber(live_at) end
redis.call('HSET', unit, 'state', restore, 'updated_at', tostring(now),
  'next_attempt_at', tostring(next_at))
redis.call('HDEL', unit, 'lease_until')
local rounds = tonumber(redis.call('HGET', unit, 'round_attempts') or '0') or 0
if rounds > 0 then redis.call('HINCRBY', unit, 'round_attempts', -1) end
if clear_first == '1' then redis.call('HDEL', unit, 'first_attempt_at') end
redis.call('HSETNX', unit, 'parked_at', tostring(now))
if record ~= '' then redis.call('RPUSH', attempts_list, record) end
redis.call('ZADD', live, live_at, uid)
if park == '1' then
  local since = redis.call('HGET', unit, 'parked_at')
  redis.call('ZADD', waiting, 'NX', since, uid)
end
return 1
"""

# The outcome of one admitted call. Returns {transition, state, reason}.
_DONE = (
    _FACTOR
    + """
local lane, probe, slots = KEYS[1], KEYS[2], KEYS[3]
local uid, now, slot_token, outcome = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local threshold, window, min_calls = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local error_rate, probe_every = tonumber(ARGV[8]), tonumber(ARGV[9])
local funds_every = tonumber(ARGV[10])
local retry_after, why = tonumber(ARGV[11]), ARGV[12]
redis.call('ZREM', slots, slot_token)
if redis.call('GET', probe) == uid then redis.call('DEL', probe) end
local h = redis.call('HMGET', lane, 'state', 'reason', 'win_start', 'win_calls', 'win_failures',
  'consecutive', 'slow_until', 'slow_factor')
local state, reason = h[1] or 'open', h[2] or ''
local win_start = tonumber(h[3] or '0') or 0
local calls, failures = tonumber(h[4] or '0') or 0, tonumber(h[5] or '0') or 0
if now - win_start > window then win_start, calls, failures = now, 0, 0 end
local function opened()
  redis.call('HSET', lane, 'state', 'open', 'reason', '', 'by', '', 'since', tostring(now),
    'consecutive', 0, 'win_start', tostring(now), 'win_calls', 0, 'win_failures', 0)
  redis.call('HDEL', lane, 'probe_at')
  return {'opened', 'open', ''}
end
if outcome == 'success' or outcome == 'answered' then
  redis.call('HSET', lane, 'consecutive', 0, 'win_start', tostring(win_start),
    'win_calls', calls + 1, 'win_failures', failures)
  if state == 'broken' or (state == 'paused' and reason == 'funds' and outcome == 'success') then
    return opened()
  end
  if state == 'paused' and reason == 'funds' then
    redis.call('HSET', lane, 'probe_at', tostring(now + funds_every))
  end
  return {'', state, reason}
end
if outcome == 'failure' then
  local consecutive = (tonumber(h[6] or '0') or 0) + 1
  calls, failures = calls + 1, failures + 1
  redis.call('HSET', lane, 'consecutive', consecutive, 'win_start', tostring(win_start),
    'win_calls', calls, 'win_failures', failures)
  if state == 'open' and (consecutive >= threshold
      or (calls >= min_calls and failures / calls >= error_rate)) then
    redis.call('HSET', lane, 'state', 'broken', 'reason', why, 'by', 'breaker',
      'since', tostring(now), 'probe_at', tostring(now + probe_every))
    return {'broken', 'broken', why}
  end
  if state == 'broken' then
    redis.call('HSET', lane, 'probe_at', tostring(now + probe_every))
  end
  return {'', state, reason}
end
if outcome == 'funds' then
  if state == 'paused' and reason ~= 'funds' then return {'', state, reason} end
  redis.call('HSET', lane, 'probe_at', tostring(now + funds_every))
  if state == 'paused' then return {'', state, reason} end
  redis.call('HSET', lane, 'state', 'paused', 'reason', 'funds', 'by', 'provider',
    'since', tostring(now))
  return {'paused', 'paused', 'funds'}
end
if outcome == 'rate_limited' then
  local slow_until = tonumber(h[7] or '0') or 0
  if now < slow_until then
    -- Calls already in flight when the lane slowed down: the same episode, so wait
    -- longer if asked, but halve the rate once per episode, not once per answer.
    redis.call('HSET', lane, 'slow_until', tostring(math.max(slow_until, now + retry_after)))
    return {'', state, reason}
  end
  local f = factor(h[7], h[8], now)
  redis.call('HSET', lane, 'slow_until', tostring(now + retry_after),
    'slow_factor', tostring(math.max(MIN_FACTOR, f / 2)))
  return {'slowed', state, reason}
end
return {'', state, reason}
"""
).replace("RECOVERY", str(RECOVERY_PER_SECOND))

_ADMIT = _ADMIT.replace("RECOVERY", str(RECOVERY_PER_SECOND))
_DONE = _DONE.replace("MIN_FACTOR", str(MIN_RATE_FACTOR))

# Release up to N waiting units, oldest first: their live score becomes now, so the
# scheduler publishes them at once. Units no longer live (finished meanwhile) just leave.
_RELEASE = """
local waiting, live, now, n = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGE', waiting, 0, n - 1)
for _, uid in ipairs(ids) do
  redis.call('ZREM', waiting, uid)
  redis.call('ZADD', live, 'XX', now, uid)
end
return #ids
"""

_SET_STATE = """
local lane, probe, log, lanes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local name, state, reason, by, now, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local before = redis.call('HMGET', lane, 'state', 'reason')
redis.call('SADD', lanes, name)
redis.call('HSET', lane, 'state', state, 'reason', reason, 'by', by, 'since', now,
  'consecutive', 0, 'win_start', now, 'win_calls', 0, 'win_failures', 0)
redis.call('HDEL', lane, 'probe_at', 'slow_until', 'slow_factor')
redis.call('DEL', probe)
redis.call('LPUSH', log, entry)
redis.call('LTRIM', log, 0, LOG_LENGTH - 1)
return {before[1] or 'open', before[2] or ''}
""".replace("LOG_LENGTH", str(AUDIT_LOG_LENGTH))


@dataclass(frozen=True)
class LaneLimits:
    """One lane's limits: in-flight cap and token bucket (0 = no limit)."""

    max_in_flight: int
    rate_per_second: float

    @property
    def burst(self) -> float:
        """Bucket size: one call. Calls are spaced evenly at the rate rather than sent in
        bursts, so the jitter between our start times and the provider's arrival times
        stays within the provider's own bucket (a 429 would slow the whole lane)."""
        return 1.0


@dataclass(frozen=True)
class BreakerPolicy:
    """When the breaker trips and how often a closed lane is probed."""

    consecutive_failures: int = 5
    error_rate: float = 0.5
    window_seconds: float = 60.0
    min_calls: int = 20
    probe_seconds: float = 10.0
    funds_probe_seconds: float = 300.0


@dataclass(frozen=True)
class Gate:
    """``admit``'s answer.

    ``decision``: ``unit`` (go), ``probe`` (go, as the lane's one probe), ``wait`` (the
    lane is not open), ``defer`` (a limit: come back in ``seconds``). ``waited``: seconds
    this unit had waited before it was let through.
    """

    decision: str
    seconds: float = 0.0
    detail: str = ""
    reason: str = ""
    waited: float = 0.0
    slot: str = ""

    @property
    def goes(self) -> bool:
        return self.decision in ("unit", "probe")


@dataclass(frozen=True)
class Verdict:
    """What recording an outcome did to the lane: a transition ("" for none), the state
    the lane is in now and its reason."""

    transition: str
    state: str
    reason: str

    @property
    def open(self) -> bool:
        return self.state == "open"


@dataclass(frozen=True)
class LaneView:
    """One lane as operators see it."""

    name: str
    state: str
    reason: str
    by: str
    since: float
    waiting: int
    oldest_waiting_since: float | None
    probing: bool
    in_flight: int
    slowed_until: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "state": self.state,
            "reason": self.reason,
            "by": self.by,
            "since": self.since or None,
            "units_waiting": self.waiting,
            "oldest_waiting_since": self.oldest_waiting_since,
            "probing": self.probing,
            "in_flight": self.in_flight,
            "slowed_until": self.slowed_until or None,
        }


class LaneStore:
    """Reads and atomic updates of the lanes (see module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._admit = client.register_script(_ADMIT)
        self._set_aside = client.register_script(_SET_ASIDE)
        self._done = client.register_script(_DONE)
        self._release = client.register_script(_RELEASE)
        self._set_state = client.register_script(_SET_STATE)

    # keys ---------------------------------------------------------------------------
    def _lane(self, name: str) -> str:
        return f"{self._keys.prefix}:lane:{name}"

    def waiting_key(self, name: str) -> str:
        return f"{self._lane(name)}:waiting"

    def _probe(self, name: str) -> str:
        return f"{self._lane(name)}:probe"

    def _slots(self, name: str) -> str:
        return f"{self._lane(name)}:slots"

    @property
    def _all(self) -> str:
        return f"{self._keys.prefix}:lanes"

    @property
    def _log(self) -> str:
        return f"{self._keys.prefix}:lanes:log"

    # the fulfilment path --------------------------------------------------------------
    def admit(
        self,
        name: str,
        unit_id: str,
        *,
        now: float,
        limits: LaneLimits,
        slot_ttl: float,
        max_wait: float,
        slot: str,
    ) -> Gate:
        """May this unit call the provider now? Takes a slot and a token when it may."""
        reply = self._admit(
            keys=[
                self._lane(name),
                self.waiting_key(name),
                self._probe(name),
                self._slots(name),
                self._keys.unit(unit_id),
                self._all,
            ],
            args=[
                unit_id,
                now,
                name,
                limits.max_in_flight,
                limits.rate_per_second,
                limits.burst,
                slot_ttl,
                max(1, int(slot_ttl * 1000)),
                max_wait,
                slot,
            ],
        )
        decision = text(reply[0])
        if decision == "wait":
            return Gate("wait", detail=text(reply[1]), reason=text(reply[2]))
        if decision == "defer":
            return Gate("defer", seconds=float(text(reply[1])), detail=text(reply[2]))
        return Gate(
            decision, seconds=float(text(reply[1])), waited=float(text(reply[2])), slot=slot
        )

    def set_aside(
        self,
        name: str,
        unit_id: str,
        attempt: int,
        *,
        restore: str,
        now: float,
        come_back_at: float,
        park: bool,
        clear_first_attempt: bool,
        record: str = "",
    ) -> bool:
        """Hand the current attempt back (see ``_SET_ASIDE``); False if fenced out."""
        done = self._set_aside(
            keys=[
                self._keys.unit(unit_id),
                self._keys.live,
                self.waiting_key(name),
                self._keys.attempts(unit_id),
            ],
            args=[
                unit_id,
                attempt,
                restore,
                now,
                come_back_at,
                "1" if park else "0",
                "1" if clear_first_attempt else "0",
                record,
            ],
        )
        return bool(done)

    def done(
        self,
        name: str,
        unit_id: str,
        slot: str,
        outcome: str,
        *,
        now: float,
        breaker: BreakerPolicy,
        retry_after: float = 0.0,
        reason: str = "",
    ) -> Verdict:
        """Record one admitted call's outcome: ``success`` (the provider did it),
        ``answered`` (a definite refusal: the provider is up), ``failure`` (transient or
        unknown outcome), ``funds`` or ``rate_limited``."""
        reply = self._done(
            keys=[self._lane(name), self._probe(name), self._slots(name)],
            args=[
                unit_id,
                now,
                slot,
                outcome,
                breaker.consecutive_failures,
                breaker.window_seconds,
                breaker.min_calls,
                breaker.error_rate,
                breaker.probe_seconds,
                breaker.funds_probe_seconds,
                retry_after,
                reason,
            ],
        )
        return Verdict(text(reply[0]), text(reply[1]), text(reply[2]))

    def release(self, name: str, count: int, *, now: float | None = None) -> int:
        """Let up to ``count`` waiting units go, oldest first; returns how many."""
        if count <= 0:
            return 0
        now = time.time() if now is None else now
        return int(self._release(keys=[self.waiting_key(name), self._keys.live], args=[now, count]))

    # operators ------------------------------------------------------------------------
    def set_state(
        self, name: str, state: str, *, reason: str, by: str, action: str, now: float | None = None
    ) -> tuple[str, str]:
        """Force a lane's state (pause/resume), recorded in the audit log; returns the
        state and reason it had before."""
        now = time.time() if now is None else now
        entry = json.dumps(
            {"at": round(now, 3), "lane": name, "action": action, "by": by, "reason": reason}
        )
        reply = self._set_state(
            keys=[self._lane(name), self._probe(name), self._log, self._all],
            args=[name, state, reason, by, now, entry],
        )
        return text(reply[0]), text(reply[1])

    def log_transition(self, name: str, action: str, reason: str, *, by: str) -> None:
        """Record an automatic transition (breaker, funds) in the audit log."""
        at = round(time.time(), 3)
        entry = json.dumps({"at": at, "lane": name, "action": action, "by": by, "reason": reason})
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(self._log, entry)
        pipe.ltrim(self._log, 0, AUDIT_LOG_LENGTH - 1)
        pipe.execute()

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self._redis.lrange(self._log, 0, limit - 1)]

    # reads ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(text(raw) for raw in self._redis.smembers(self._all))

    def view(self, name: str, *, now: float | None = None) -> LaneView:
        now = time.time() if now is None else now
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._lane(name))
        pipe.zcard(self.waiting_key(name))
        pipe.zrange(self.waiting_key(name), 0, 0, withscores=True)
        pipe.exists(self._probe(name))
        pipe.zcount(self._slots(name), now, "+inf")
        raw, waiting, oldest, probing, in_flight = pipe.execute()
        fields: Mapping[str, str] = text_map(raw)
        slowed = float(fields.get("slow_until") or 0)
        return LaneView(
            name=name,
            state=fields.get("state") or "open",
            reason=fields.get("reason", ""),
            by=fields.get("by", ""),
            since=float(fields.get("since") or 0),
            waiting=int(waiting),
            oldest_waiting_since=float(oldest[0][1]) if oldest else None,
            probing=bool(probing),
            in_flight=int(in_flight),
            slowed_until=slowed if slowed > now else 0.0,
        )

    def probe_due(self, name: str, *, now: float) -> bool:
        """A closed lane that probes (broken, or paused for funds) whose probe is due and
        whose probe lease is free."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._lane(name), "state", "reason", "probe_at")
        pipe.exists(self._probe(name))
        (state, reason, probe_at), held = pipe.execute()
        state, reason = text(state or b"open"), text(reason or b"")
        probes = state == "broken" or (state == "paused" and reason == FUNDS)
        return probes and not held and now >= float(text(probe_at or b"0") or 0)
