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
from typing import Any

from orchestrator_flows.errors import StoreUnavailable
from orchestrator_flows.kv.redis_connection import RedisConnection
from orchestrator_flows.store.keys import CallKeys
from orchestrator_flows.store.results import Busy, ClaimResult, Ended, Queued, Recorded, Taken

# The queue of turns waiting for the claim: tickets `<gives up, ms on this server's clock>:<token>`
# in arrival order, each set by the script when its turn first queues (its wait from then).
# `queue_head` drops the tickets whose turn gave up and answers the first live one (or nil).
# `wake` tells the waiting turns the claim is free: one item to `bell` for the first in line
# (only it listens there) and one each to `chime` for the others (to learn their place).
_QUEUE = """
local function token_of(ticket)
  return string.match(ticket, '^%d+:(.*)$')
end
local function queue_head(queue, now)
  while true do
    local ticket = redis.call('LINDEX', queue, 0)
    if not ticket then
      return nil
    end
    local gives_up = tonumber(string.match(ticket, '^(%d+):'))
    if gives_up and gives_up >= now then
      return ticket
    end
    redis.call('LPOP', queue)
  end
end
local function find(queue, token)
  local tickets = redis.call('LRANGE', queue, 0, -1)
  for index, ticket in ipairs(tickets) do
    if token_of(ticket) == token then
      return ticket, index - 1
    end
  end
  return nil, nil
end
local function wake(queue, bell, chime)
  local waiting = redis.call('LLEN', queue)
  if waiting > 0 then
    redis.call('DEL', bell)
    redis.call('RPUSH', bell, '1')
    redis.call('PEXPIRE', bell, 30000)
  end
  if waiting > 1 then
    redis.call('DEL', chime)
    for _ = 2, waiting do
      redis.call('RPUSH', chime, '1')
    end
    redis.call('PEXPIRE', chime, 30000)
  end
end
-- A turn leaves the queue: if it was first in line and the claim is free, the next is woken.
local function leave(queue, token, claim, bell, chime, now)
  local ticket, index = find(queue, token)
  if ticket then
    redis.call('LREM', queue, 1, ticket)
    if index == 0 and redis.call('EXISTS', claim) == 0 and queue_head(queue, now) then
      wake(queue, bell, chime)
    end
  end
end
"""

CLAIM = _QUEUE + """
-- KEYS[1] claim key, KEYS[2] state hash, KEYS[3] replies hash, KEYS[4] steps list,
-- KEYS[5] ended marker, KEYS[6] queue, KEYS[7] bell, KEYS[8] chime
-- ARGV[1] claim token, ARGV[2] lease in milliseconds, ARGV[3] Idempotency-Key or '',
-- ARGV[4] when the client gives up, in ms on this server's clock,
-- ARGV[5] how long the turn waits its turn, ms ('0': it does not), ARGV[6] the queue's TTL, ms
-- Every answer ends with the server's time in ms. Nothing is done, {3, now}, when the claim
-- arrives after its client gave up (Redis stalled: a lease taken now would hold the call for
-- nobody); {4, now} when the call was ended; {2, reply, HGETALL state, steps if the reply
-- completed the call, now} when a reply is recorded under the key (lease not taken, never
-- queued; a ticket the turn held is given up); {1, HGETALL state, now} when taken (or already
-- held by this token: a resent claim); {5, PTTL, place in the queue (0: first), now} when
-- queued (its ticket is set on its first claim, once); {0, PTTL, now} when busy. A free claim
-- goes to the first live ticket, or to anyone if there is none.
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
    if ARGV[5] ~= '0' then
      leave(KEYS[6], ARGV[1], KEYS[1], KEYS[7], KEYS[8], now)
    end
    return {2, reply, redis.call('HGETALL', KEYS[2]), steps, now}
  end
end
local first = queue_head(KEYS[6], now)
if not holder and (not first or token_of(first) == ARGV[1]) then
  if first then
    redis.call('LPOP', KEYS[6])
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, redis.call('HGETALL', KEYS[2]), now}
end
if ARGV[5] ~= '0' then
  local ticket, index = find(KEYS[6], ARGV[1])
  if not ticket then
    index = redis.call('RPUSH', KEYS[6], (now + tonumber(ARGV[5])) .. ':' .. ARGV[1]) - 1
  end
  redis.call('PEXPIRE', KEYS[6], ARGV[6])
  if not holder then
    -- free, and a turn before this one is first in line: it may not have been woken (it
    -- came first while the claim was held, and the ticket before it gave up since)
    wake(KEYS[6], KEYS[7], KEYS[8])
  end
  return {5, redis.call('PTTL', KEYS[1]), index, now}
end
return {0, redis.call('PTTL', KEYS[1]), now}
"""

COMMIT = _QUEUE + """
-- KEYS[1] claim key, KEYS[2] state hash, KEYS[3] steps list, KEYS[4] replies hash,
-- KEYS[5] queue, KEYS[6] bell, KEYS[7] chime (turns waiting are woken once the claim is let go)
-- ARGV[1] claim token, ARGV[2] session TTL in seconds, ARGV[3] step JSON,
-- ARGV[4] '1' to return the whole trail, ARGV[5] Idempotency-Key or '', ARGV[6] its reply,
-- ARGV[7..] state field, value, field, value ...
-- -> {0} when the token no longer holds the claim (nothing written), else {1[, steps]};
--    a resent commit that already ran answers {1[, steps]} again and writes nothing (the first
--    dropped the claim, so the token no longer holds it: only then is last_commit looked at)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('HGET', KEYS[2], 'last_commit') ~= ARGV[1] then
    return {0}
  end
  if ARGV[4] == '1' then
    return {1, redis.call('LRANGE', KEYS[3], 0, -1)}
  end
  return {1}
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
wake(KEYS[5], KEYS[6], KEYS[7])
if ARGV[4] == '1' then
  return {1, redis.call('LRANGE', KEYS[3], 0, -1)}
end
return {1}
"""

RELEASE = _QUEUE + """
-- KEYS[1] claim key, KEYS[2] queue, KEYS[3] bell, KEYS[4] chime; ARGV[1] claim token. Drops
-- the claim only if this token still holds it, and wakes the turns waiting for it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  wake(KEYS[2], KEYS[3], KEYS[4])
  return 1
end
return 0
"""

LEAVE = _QUEUE + """
-- KEYS[1] queue, KEYS[2] claim key, KEYS[3] bell, KEYS[4] chime; ARGV[1] the turn's token.
-- A turn that stopped waiting leaves the queue (the next is woken if it is now first).
local t = redis.call('TIME')
leave(KEYS[1], ARGV[1], KEYS[2], KEYS[3], KEYS[4],
      tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
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

DELETE = _QUEUE + """
-- KEYS[1] state hash, KEYS[2] steps list, KEYS[3] claim key, KEYS[4] replies hash,
-- KEYS[5] ended marker, KEYS[6] queue, KEYS[7] bell, KEYS[8] chime; ARGV[1] how long the call
-- stays ended, seconds -> 1 if the session existed (and is now marked ended: turns waiting are
-- woken, to find it so). A call with no session (its first turn may be in flight) is left as
-- it is.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[1])
wake(KEYS[6], KEYS[7], KEYS[8])
redis.call('DEL', KEYS[6])
return 1
"""

UNSCHEDULE = """
-- KEYS[1] state hash. Clears when the call is due in the archive's index (the schedule sent
-- with the commit failed): its next turn schedules it again. Never creates the hash.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'archive_due', '0')
end
return 0
"""

TOUCH = """
-- KEYS[1] state hash, KEYS[2] steps list, KEYS[3] replies hash; ARGV[1] TTL, seconds
-- -> 1 if the session exists (its keys' TTL renewed)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
for i = 1, 3 do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
"""

# A claim must run this long before its client gives up, to be sure its answer is still
# awaited when it arrives (and to absorb the error of measuring the server's clock).
LATE_MARGIN_SECONDS = 0.25
# A claim's round trip short enough to measure the server's clock by.
CLOCK_SAMPLE_SECONDS = 0.1
# How long one BLPOP for a wake-up blocks before it is sent again: well inside the cluster
# client's socket timeout (0.75 s by default), which it would take for a dead node.
WAKE_SLICE_SECONDS = 0.25
# How long a queue outlives its last ticket beyond the lease (a ticket waits at most 25 s).
QUEUE_MARGIN_MS = 30_000
def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisBackend:
    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self.name = connection.name
        self._claim = connection.script(CLAIM)
        self._commit = connection.script(COMMIT)
        self._release = connection.script(RELEASE)
        self._read = connection.script(READ)
        self._delete = connection.script(DELETE)
        self._touch = connection.script(TOUCH)
        self._unschedule = connection.script(UNSCHEDULE)
        self._leave = connection.script(LEAVE)
        # The server's clock minus this one's, in ms, as the last claim measured it.
        self._clock_offset_ms = 0.0

    async def claim(
        self, keys: CallKeys, token: str, lease_ms: int, reply_key: str | None,
        wait_ms: int = 0,
    ) -> ClaimResult:
        # The claim carries the moment its client gives up, on the server's clock as this
        # instance last measured it: a claim that reaches Redis later (Redis stalled, the turn
        # answered 503) does nothing, instead of holding the call for a whole lease.
        gives_up = time.time() + self.connection.deadline_seconds
        deadline = asyncio.get_running_loop().time() + self.connection.deadline_seconds
        sent = 0.0

        async def send(args: list[str | int]) -> list[Any]:
            nonlocal sent
            sent = time.time()  # when it leaves, not when it queued for a connection
            reply: list[Any] = await self._claim(
                keys=[keys.claim, keys.state, keys.replies, keys.steps, keys.ended, keys.queue,
                      keys.bell, keys.chime], args=args)
            return reply

        for attempt in range(2):
            not_after = int((gives_up - LATE_MARGIN_SECONDS) * 1000 + self._clock_offset_ms)
            args: list[str | int] = [token, lease_ms, reply_key or "", not_after, wait_ms,
                                     lease_ms + QUEUE_MARGIN_MS]
            reply = await self.connection.run(
                "claim", lambda args=args: send(args), deadline=deadline)  # type: ignore[misc]
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
            case 5:
                return Queued(int(reply[1]), int(reply[2]))
        raise StoreUnavailable("the claim reached the session store too late, twice")

    async def await_turn(self, keys: CallKeys, seconds: float, first: bool) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        client = self.connection.client
        key = keys.bell if first else keys.chime

        async def blpop(wait: float) -> Any:
            return await client.blpop([key], timeout=wait)

        while (left := end - loop.time()) > 0.01:
            wait = round(min(left, WAKE_SLICE_SECONDS), 3)
            try:
                popped = await self.connection.listen(
                    "await_turn", lambda wait=wait: blpop(wait),  # type: ignore[misc]
                    deadline=loop.time() + wait + self.connection.deadline_seconds)
            except StoreUnavailable:
                # A slow or failing store: the claim that follows says what it is.
                return
            if popped is not None:
                return

    async def leave(self, keys: CallKeys, token: str) -> None:
        await self.connection.run("leave", lambda: self._leave(
            keys=[keys.queue, keys.claim, keys.bell, keys.chime], args=[token]))

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
        answer: list[Any] = await self.connection.run(
            "commit",
            lambda: self._commit(keys=[keys.claim, keys.state, keys.steps, keys.replies,
                                       keys.queue, keys.bell, keys.chime], args=args),
        )
        if answer[0] != 1:
            return None
        return list(answer[1]) if len(answer) > 1 else []

    async def release(self, keys: CallKeys, token: str) -> None:
        await self.connection.run("release", lambda: self._release(
            keys=[keys.claim, keys.queue, keys.bell, keys.chime], args=[token]))

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]:
        reply: list[Any] = await self.connection.run(
            "read",
            lambda: self._read(keys=[keys.state, keys.steps], args=["1" if with_steps else "0"]),
        )
        return _pairs(reply[0]), list(reply[1])

    async def delete(self, keys: CallKeys, ended_seconds: int) -> bool:
        existed: int = await self.connection.run(
            "delete",
            lambda: self._delete(keys=[keys.state, keys.steps, keys.claim, keys.replies,
                                       keys.ended, keys.queue, keys.bell, keys.chime],
                                 args=[ended_seconds]),
            resend=False,
        )
        return existed == 1

    async def unschedule(self, keys: CallKeys) -> None:
        await self.connection.run("unschedule",
                                  lambda: self._unschedule(keys=[keys.state], args=[]))

    async def touch(self, keys: CallKeys, ttl_seconds: int) -> bool:
        alive: int = await self.connection.run(
            "touch", lambda: self._touch(keys=[keys.state, keys.steps, keys.replies],
                                         args=[ttl_seconds]))
        return alive == 1

    async def ping(self) -> None:
        await self.connection.run("ping", self.connection.client.ping)

    async def close(self) -> None:
        await self.connection.close()
