"""The breakers' state on Redis: one hash per agent, each primitive one Lua script, times from
the server's clock so every instance agrees. Fields: state, failures, successes, window_start,
opened_at, probe_until."""

from __future__ import annotations

from typing import Any

from orchestrator_flows.breaker import (
    BreakerPolicy,
    BreakerState,
    Decision,
    breaker_key,
)
from orchestrator_flows.kv.redis_connection import RedisConnection

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

BREAKER_PEEK = _NOW + """
-- KEYS[1] breaker hash; ARGV[1] cool-down ms -> closed | open | half_open
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' and now >= tonumber(redis.call('HGET', KEYS[1], 'opened_at')) + ARGV[1] then
  return 'half_open'
end
return state
"""

BREAKER_ADMIT = _NOW + """
-- KEYS[1] breaker hash; ARGV[1] cool-down ms, ARGV[2] how long a probe may take, ms
-- -> {'closed', 0} go | {'probe', 0} go, as the one probe | {'open', ms until a retry}
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then
  return {'closed', 0}
end
if state == 'open' then
  local reopen = tonumber(redis.call('HGET', KEYS[1], 'opened_at')) + ARGV[1]
  if now < reopen then
    return {'open', reopen - now}
  end
else
  local busy_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until'))
  if now < busy_until then
    return {'open', busy_until - now}
  end
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1] + ARGV[2] + 60000)
return {'probe', 0}
"""

BREAKER_REPORT = _NOW + """
-- KEYS[1] breaker hash; ARGV[1] '1' the call went well, '0' it failed; ARGV[2] failures that
-- may open it, ARGV[3] window ms, ARGV[4] cool-down ms, ARGV[5] share of failed calls that
-- opens it, ARGV[6] successes this instance saw since its last report -> the state after
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == '1' then
  if state ~= 'closed' then
    redis.call('DEL', KEYS[1])
  end
  return 'closed'
end
local ttl = ARGV[3] + ARGV[4] + 60000
if state ~= 'closed' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 'open'
end
local start = tonumber(redis.call('HGET', KEYS[1], 'window_start') or '0')
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local successes = tonumber(redis.call('HGET', KEYS[1], 'successes') or '0')
if now - start > tonumber(ARGV[3]) then
  start, failures, successes = now, 0, 0
end
failures = failures + 1
successes = successes + tonumber(ARGV[6])
if failures >= tonumber(ARGV[2]) and failures / (failures + successes) >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'failures', 0, 'successes', 0)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 'open'
end
redis.call('HSET', KEYS[1], 'window_start', start, 'failures', failures, 'successes', successes)
redis.call('PEXPIRE', KEYS[1], ttl)
return 'closed'
"""
class RedisBreakerStore:
    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self._peek = connection.script(BREAKER_PEEK)
        self._admit = connection.script(BREAKER_ADMIT)
        self._report = connection.script(BREAKER_REPORT)

    async def peek(self, agent: str, cooldown_ms: int) -> BreakerState:
        state: BreakerState = await self.connection.run(
            "breaker", lambda: self._peek(keys=[breaker_key(agent)], args=[cooldown_ms]))
        return state

    async def admit(self, agent: str, cooldown_ms: int, probe_ms: int) -> tuple[Decision, int]:
        reply: list[Any] = await self.connection.run(
            "breaker",
            lambda: self._admit(keys=[breaker_key(agent)], args=[cooldown_ms, probe_ms]),
            resend=False,
        )
        return reply[0], int(reply[1])

    async def report(
        self, agent: str, ok: bool, policy: BreakerPolicy, successes: int
    ) -> BreakerState:
        args = ["1" if ok else "0", policy.failures, int(policy.window_seconds * 1000),
                int(policy.cooldown_seconds * 1000), policy.failure_rate, successes]
        state: BreakerState = await self.connection.run(
            "breaker",
            lambda: self._report(keys=[breaker_key(agent)], args=args),
            resend=False,
        )
        return state
