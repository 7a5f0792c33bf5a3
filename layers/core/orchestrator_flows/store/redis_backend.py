"""The Redis backend: each store primitive is one Lua script, so one round trip, atomic, and
valid on Redis Cluster / ElastiCache Serverless (every key is named in KEYS and shares a slot).

Lua rather than MULTI/EXEC: the claim must decide (SET NX) and read in the same round trip, and
the commit must check the fencing token before writing; a transaction cannot branch on a read
without WATCH, which costs extra round trips, and redis-py's cluster pipelines run queued
commands one by one.

Claim, commit and release are idempotent for their token (the state remembers the token of its
last commit), so each may be sent again once when its connection turns out dead (after a Redis
restart every pooled connection is) without running twice; the read is pure. Only the delete,
whose answer says whether the call existed, is never sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator_flows.breaker import BreakerPolicy, BreakerState, Decision
from orchestrator_flows.errors import StoreUnavailable
from orchestrator_flows.store import (
    Busy,
    CallKeys,
    ClaimResult,
    Ended,
    Recorded,
    Taken,
    breaker_key,
)

T = TypeVar("T")

CLAIM = """
-- KEYS[1] claim key, KEYS[2] state hash, KEYS[3] replies hash, KEYS[4] steps list,
-- KEYS[5] ended marker
-- ARGV[1] claim token, ARGV[2] lease in milliseconds, ARGV[3] Idempotency-Key or '',
-- ARGV[4] when the client gives up, in ms on this server's clock
-- Every answer ends with the server's time in ms. Nothing is done, {3, now}, when the claim
-- arrives after its client gave up (Redis stalled: a lease taken now would hold the call for
-- nobody); {4, now} when the call was ended; {2, reply, HGETALL state, steps if the reply
-- completed the call, now} when a reply is recorded under the key (lease not taken);
-- {1, HGETALL state, now} when taken (or already held by this token: a resent claim);
-- {0, PTTL, now} when busy
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  -- sent again after a dead connection, and the first did take it: it is this turn's
  return {1, redis.call('HGETALL', KEYS[2]), now}
end
if now > tonumber(ARGV[4]) then
  return {3, now}
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {4, now}
end
if ARGV[3] ~= '' then
  local reply = redis.call('HGET', KEYS[3], ARGV[3])
  if reply then
    local steps = {}
    if string.sub(reply, 1, 1) == '1' then
      steps = redis.call('LRANGE', KEYS[4], 0, -1)
    end
    return {2, reply, redis.call('HGETALL', KEYS[2]), steps, now}
  end
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, redis.call('HGETALL', KEYS[2]), now}
end
return {0, redis.call('PTTL', KEYS[1]), now}
"""

COMMIT = """
-- KEYS[1] claim key, KEYS[2] state hash, KEYS[3] steps list, KEYS[4] replies hash
-- ARGV[1] claim token, ARGV[2] session TTL in seconds, ARGV[3] step JSON,
-- ARGV[4] '1' to return the whole trail, ARGV[5] Idempotency-Key or '', ARGV[6] its reply,
-- ARGV[7..] state field, value, field, value ...
-- -> {0} when the token no longer holds the claim (nothing written), else {1[, steps]};
--    a resent commit that already ran answers {1[, steps]} again and writes nothing
if redis.call('HGET', KEYS[2], 'last_commit') == ARGV[1] then
  if ARGV[4] == '1' then
    return {1, redis.call('LRANGE', KEYS[3], 0, -1)}
  end
  return {1}
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[2], 'last_commit', ARGV[1], unpack(ARGV, 7))
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[2])
redis.call('DEL', KEYS[1])
if ARGV[4] == '1' then
  return {1, redis.call('LRANGE', KEYS[3], 0, -1)}
end
return {1}
"""

RELEASE = """
-- KEYS[1] claim key; ARGV[1] claim token. Drops the claim only if this token still holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

READ = """
-- KEYS[1] state hash, KEYS[2] steps list; ARGV[1] '1' to include the trail
-- -> {HGETALL state, steps or {}}
local state = redis.call('HGETALL', KEYS[1])
if ARGV[1] == '1' and #state > 0 then
  return {state, redis.call('LRANGE', KEYS[2], 0, -1)}
end
return {state, {}}
"""

DELETE = """
-- KEYS[1] state hash, KEYS[2] steps list, KEYS[3] claim key, KEYS[4] replies hash,
-- KEYS[5] ended marker; ARGV[1] how long the call stays ended, seconds
-- -> 1 if the session existed (and is now marked ended)
local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if existed == 1 then
  redis.call('SET', KEYS[5], '1', 'EX', ARGV[1])
end
return existed
"""

# The agent circuit breaker (orchestrator_flows.breaker): one hash per agent, times from the
# server's clock so every instance agrees. Fields: state, failures, window_start, opened_at,
# probe_until.
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

# A claim must run this long before its client gives up, to be sure its answer is still
# awaited when it arrives (and to absorb the error of measuring the server's clock).
LATE_MARGIN_SECONDS = 0.25
# A claim's round trip short enough to measure the server's clock by.
CLOCK_SAMPLE_SECONDS = 0.1
# Every failure to reach Redis, whatever its form, is the domain's StoreUnavailable.
_UNAVAILABLE = (redis_errors.RedisError, OSError, asyncio.TimeoutError)
# A connection found dead: after a Redis restart, every idle pooled connection is.
_DEAD_CONNECTION = (redis_errors.ConnectionError, ConnectionError)


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisBackend:
    def __init__(
        self, client: Redis | RedisCluster, deadline_seconds: float, max_connections: int
    ) -> None:
        self.client = client
        self.name = "redis-cluster" if isinstance(client, RedisCluster) else "redis"
        self.deadline_seconds = deadline_seconds
        self._claim = client.register_script(CLAIM)
        self._commit = client.register_script(COMMIT)
        self._release = client.register_script(RELEASE)
        self._read = client.register_script(READ)
        self._delete = client.register_script(DELETE)
        self._breaker_peek = client.register_script(BREAKER_PEEK)
        self._breaker_admit = client.register_script(BREAKER_ADMIT)
        self._breaker_report = client.register_script(BREAKER_REPORT)
        self._ready = not isinstance(client, RedisCluster)
        # The server's clock minus this one's, in ms, as the last claim measured it.
        self._clock_offset_ms = 0.0
        self._ready_lock = asyncio.Lock()
        # redis-py's pools raise instead of waiting when every connection is busy; queue here,
        # inside the deadline, so a burst waits its turn rather than failing.
        self._slots = asyncio.Semaphore(max_connections)

    async def _ensure_ready(self) -> None:
        # redis-py's cluster client discovers the slots on first use; concurrent first commands
        # each start that discovery and close one another's connections. Do it once, first.
        async with self._ready_lock:
            if not self._ready:
                assert isinstance(self.client, RedisCluster)
                await self.client.initialize()
                self._ready = True

    async def _run(
        self, what: str, call: Callable[[], Awaitable[T]], resend: bool = True,
        deadline: float | None = None,
    ) -> T:
        """One primitive within the deadline (the loop's time; by default deadline_seconds
        from now). A dead connection drops the pool's idle ones and, where the primitive is
        safe to send twice, sends it once more on a fresh connection."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.deadline_seconds
        try:
            async with asyncio.timeout_at(deadline):
                async with self._slots:
                    if not self._ready:
                        await self._ensure_ready()
                    try:
                        return await call()
                    except _DEAD_CONNECTION:
                        await self._drop_idle_connections()
                        if not resend:
                            raise
                        return await call()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"session store unavailable during {what}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _drop_idle_connections(self) -> None:
        if isinstance(self.client, Redis):
            await self.client.connection_pool.disconnect(inuse_connections=False)
        # redis-py's cluster client rebuilds its node connections itself after a failure.

    async def claim(
        self, keys: CallKeys, token: str, lease_ms: int, reply_key: str | None
    ) -> ClaimResult:
        # The claim carries the moment its client gives up, on the server's clock as this
        # instance last measured it: a claim that reaches Redis later (Redis stalled, the turn
        # answered 503) does nothing, instead of holding the call for a whole lease.
        gives_up = time.time() + self.deadline_seconds
        deadline = asyncio.get_running_loop().time() + self.deadline_seconds
        sent = 0.0

        async def send(args: list[str | int]) -> list[Any]:
            nonlocal sent
            sent = time.time()  # when it leaves, not when it queued for a connection
            reply: list[Any] = await self._claim(
                keys=[keys.claim, keys.state, keys.replies, keys.steps, keys.ended], args=args)
            return reply

        for attempt in range(2):
            not_after = int((gives_up - LATE_MARGIN_SECONDS) * 1000 + self._clock_offset_ms)
            args: list[str | int] = [token, lease_ms, reply_key or "", not_after]
            reply = await self._run("claim", lambda args=args: send(args),  # type: ignore[misc]
                                    deadline=deadline)
            received = time.time()
            # A reply that took long (a busy loop, a slow network) measures the clocks badly:
            # only quick ones are kept, unless the server just said the clocks disagree.
            if received - sent < CLOCK_SAMPLE_SECONDS or reply[0] == 3:
                self._clock_offset_ms = int(reply[-1]) - (sent + received) / 2 * 1000
            if reply[0] != 3 or attempt == 1:
                break
            # Refused as late, yet its answer is here in time: the clocks disagree by more
            # than measured. Measured again just now; sent once more.
        match reply[0]:
            case 0:
                return Busy(int(reply[1]))
            case 1:
                return Taken(_pairs(reply[1]))
            case 2:
                return Recorded(reply[1], _pairs(reply[2]), tuple(reply[3]))
            case 4:
                return Ended()
        raise StoreUnavailable("the claim reached the session store too late, twice")

    async def commit(
        self,
        keys: CallKeys,
        token: str,
        ttl_seconds: int,
        step: str,
        state: dict[str, str],
        return_steps: bool,
        reply: tuple[str, str] | None,
    ) -> list[str] | None:
        args: list[str | int] = [token, ttl_seconds, step, "1" if return_steps else "0",
                                 *(reply or ("", ""))]
        for field, value in state.items():
            args += [field, value]
        answer: list[Any] = await self._run(
            "commit",
            lambda: self._commit(keys=[keys.claim, keys.state, keys.steps, keys.replies],
                                 args=args),
        )
        if answer[0] != 1:
            return None
        return list(answer[1]) if len(answer) > 1 else []

    async def release(self, keys: CallKeys, token: str) -> None:
        await self._run("release", lambda: self._release(keys=[keys.claim], args=[token]))

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]:
        reply: list[Any] = await self._run(
            "read",
            lambda: self._read(keys=[keys.state, keys.steps], args=["1" if with_steps else "0"]),
        )
        return _pairs(reply[0]), list(reply[1])

    async def delete(self, keys: CallKeys, ended_seconds: int) -> bool:
        existed: int = await self._run(
            "delete",
            lambda: self._delete(keys=[keys.state, keys.steps, keys.claim, keys.replies,
                                       keys.ended], args=[ended_seconds]),
            resend=False,
        )
        return existed == 1

    async def breaker_peek(self, agent: str, cooldown_ms: int) -> BreakerState:
        state: BreakerState = await self._run(
            "breaker", lambda: self._breaker_peek(keys=[breaker_key(agent)], args=[cooldown_ms]))
        return state

    async def breaker_admit(
        self, agent: str, cooldown_ms: int, probe_ms: int
    ) -> tuple[Decision, int]:
        reply: list[Any] = await self._run(
            "breaker",
            lambda: self._breaker_admit(keys=[breaker_key(agent)], args=[cooldown_ms, probe_ms]),
            resend=False,
        )
        return reply[0], int(reply[1])

    async def breaker_report(
        self, agent: str, ok: bool, policy: BreakerPolicy, successes: int
    ) -> BreakerState:
        args = ["1" if ok else "0", policy.failures, int(policy.window_seconds * 1000),
                int(policy.cooldown_seconds * 1000), policy.failure_rate, successes]
        state: BreakerState = await self._run(
            "breaker",
            lambda: self._breaker_report(keys=[breaker_key(agent)], args=args),
            resend=False,
        )
        return state

    async def close(self) -> None:
        await self.client.aclose()


def connect(
    url: str,
    mode: Literal["standalone", "cluster"],
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    ca_certs: str | None = None,
) -> RedisBackend:
    """Build the client lazily (no I/O here): connections open on first use, on the running loop.

    No automatic retries: a retried commit whose first try did run would be misreported as a
    lost claim, and a dead Redis must answer 503 within the deadline, not after backoffs.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": max_connections,
        "health_check_interval": 30,
    }
    if ca_certs:
        options["ssl_ca_certs"] = ca_certs
    client: Redis | RedisCluster
    if mode == "cluster":
        options.pop("health_check_interval")
        client = RedisCluster.from_url(url, **options)
    else:
        client = Redis.from_url(url, **options)
    # A store call may need a connect plus a reply; past that it is unavailable, not slow.
    return RedisBackend(
        client,
        deadline_seconds=min(1.9, connect_timeout + 2 * socket_timeout),
        max_connections=max_connections,
    )
