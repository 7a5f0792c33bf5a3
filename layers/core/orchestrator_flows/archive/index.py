"""Which calls are due to be archived, and when: sorted sets in Redis, call -> the moment (epoch
ms) the call is due. A turn schedules its call when it commits: idle-due (ARCHIVE_IDLE_SECONDS
after the turn) while the call goes on, due at once when it completes; the sweeper archives what
is due and takes it off, unless a turn moved it meanwhile.

Sixteen shards, each a key of its own hash tag, so that they spread over a Redis Cluster's nodes
and no shard is a hot key; a call's shard is fixed by its id, and its member there is
`<call id> <account id>` (ids hold no space), so that the sweeper knows a call's account even
once Redis has let the call go. No KEYS, no SCAN, no keyspace notifications: ElastiCache
Serverless has none of them. The index is its own cursor: what the sweeper has not archived is
still there, due, on its next run.

Beside the shards, one sorted set per account (`of:account:{<account>}`, call id -> the moment
the call surely left Redis: its last schedule plus the session TTL) holds the account's calls
Redis may still hold: with the archive's account index (GSI1), every call an erasure must find.
It is written in the same pipeline as the shard, beside the commit. An entry stays after its
call is archived (the archive's index lags its writes by a moment; an erasure must not miss the
call in between) and goes once stale, pruned by the account's next schedule, or with the whole
key, which expires a TTL (and a margin) after the account's last schedule.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from orchestrator_flows.kv.redis_connection import RedisConnection

SHARDS = 16
KEY_PREFIX = "of:archive"
ACCOUNT_PREFIX = "of:account"
# How long an account's set outlives its last write, beyond the session TTL.
ACCOUNT_MARGIN_MS = 600_000
# An account's set: the call kept until ARGV[2], entries stale before ARGV[3] out, the key's
# expiry ARGV[4] ms on.
_HOLD = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
return redis.call('PEXPIRE', KEYS[1], ARGV[4])
"""
# Taken off only if its due moment is the one the sweeper read: a turn since then moved it.
_DONE_IF_UNCHANGED = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


class Scheduled(NamedTuple):
    """A call in the index, and when it is due."""

    call_identify_id: str
    account_id: str
    due_ms: int

    @property
    def member(self) -> str:
        return f"{self.call_identify_id} {self.account_id}"

    @classmethod
    def parse(cls, member: str, due_ms: int) -> Scheduled:
        call_identify_id, _, account_id = member.partition(" ")
        return cls(call_identify_id, account_id, due_ms)


def shard_of(call_identify_id: str) -> int:
    return zlib.crc32(call_identify_id.encode()) % SHARDS


def shard_key(shard: int) -> str:
    return f"{KEY_PREFIX}:{{{shard}}}"


def account_key(account_id: str) -> str:
    return f"{ACCOUNT_PREFIX}:{{{account_id}}}"


class ArchiveIndex(Protocol):
    async def schedule(self, call: Scheduled, now_ms: int) -> None:
        """Make the call due at `call.due_ms`, and keep it in its account's set until a TTL
        after `now_ms`."""
        ...

    async def undo(self, call: Scheduled, now_ms: int) -> None:
        """Take back what `schedule(call, now_ms)` wrote, unless a later schedule replaced it
        (the commit it was sent beside lost its claim)."""
        ...

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[Scheduled]:
        """Calls of `shard` due at or before `upto_ms`, earliest first."""
        ...

    async def done(self, call: Scheduled) -> bool:
        """Take the call off its shard, if it is still due at `call.due_ms`; whether it
        was (its account's set keeps it until it is stale)."""
        ...

    async def hold(self, call_identify_id: str, account_id: str, now_ms: int) -> None:
        """Keep the call in its account's set a TTL after `now_ms` (its keys were kept
        alive)."""
        ...

    async def oldest(self) -> int | None:
        """The earliest due moment of any shard (how far behind the sweeper is)."""
        ...

    async def of_account(self, account_id: str, limit: int) -> list[str]:
        """Up to `limit` of the account's calls that Redis may hold."""
        ...

    async def forget(self, call_identify_id: str, account_id: str) -> None:
        """Take the call off, whenever it is due (an erased call)."""
        ...


class RedisArchiveIndex:
    def __init__(self, connection: RedisConnection, ttl_seconds: int) -> None:
        self.connection = connection
        self.ttl_ms = ttl_seconds * 1000
        self._done = connection.script(_DONE_IF_UNCHANGED)

    async def schedule(self, call: Scheduled, now_ms: int) -> None:
        shard = shard_key(shard_of(call.call_identify_id))

        async def send() -> Any:
            # One pipeline, not commands gathered: one task, one write to each node (on a
            # cluster the pipeline sends each node its own).
            pipe = self.connection.client.pipeline(transaction=False)
            pipe.zadd(shard, {call.member: call.due_ms})
            self._hold(pipe, call.call_identify_id, call.account_id, now_ms)
            return await pipe.execute()

        await self.connection.run("archive schedule", send)

    async def undo(self, call: Scheduled, now_ms: int) -> None:
        shard = shard_key(shard_of(call.call_identify_id))
        await asyncio.gather(
            self.connection.run("archive undo", lambda: self._done(
                keys=[shard], args=[call.member, call.due_ms])),
            self.connection.run("archive undo", lambda: self._done(
                keys=[account_key(call.account_id)],
                args=[call.call_identify_id, now_ms + self.ttl_ms])))

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[Scheduled]:
        found: list[Any] = await self.connection.run(
            "archive due", lambda: self.connection.client.zrangebyscore(
                shard_key(shard), "-inf", upto_ms, start=0, num=limit, withscores=True))
        return [Scheduled.parse(str(member), int(score)) for member, score in found]

    async def done(self, call: Scheduled) -> bool:
        shard = shard_key(shard_of(call.call_identify_id))
        removed: int = await self.connection.run("archive done", lambda: self._done(
            keys=[shard], args=[call.member, call.due_ms]))
        return removed == 1

    async def hold(self, call_identify_id: str, account_id: str, now_ms: int) -> None:
        async def send() -> Any:
            pipe = self.connection.client.pipeline(transaction=False)
            self._hold(pipe, call_identify_id, account_id, now_ms)
            return await pipe.execute()

        await self.connection.run("account hold", send)

    def _hold(self, pipe: Any, call_identify_id: str, account_id: str, now_ms: int) -> None:
        """Queue, on one key, as one command (a script: the pipeline's commands cost the
        client more than the server): the call until a TTL from now, the account's stale
        calls out, the key's own expiry renewed (every writer sets now + TTL + margin, later
        than any of its entries)."""
        pipe.eval(_HOLD, 1, account_key(account_id), call_identify_id, now_ms + self.ttl_ms,
                  now_ms, self.ttl_ms + ACCOUNT_MARGIN_MS)

    async def oldest(self) -> int | None:
        earliest: int | None = None
        for shard in range(SHARDS):
            first: list[Any] = await self.connection.run(
                "archive lag", lambda shard=shard: self.connection.client.zrange(  # type: ignore[misc]
                    shard_key(shard), 0, 0, withscores=True))
            if first and (earliest is None or int(first[0][1]) < earliest):
                earliest = int(first[0][1])
        return earliest

    async def of_account(self, account_id: str, limit: int) -> list[str]:
        found: list[Any] = await self.connection.run(
            "account index", lambda: self.connection.client.zrange(
                account_key(account_id), 0, limit - 1))
        return [str(member) for member in found]

    async def forget(self, call_identify_id: str, account_id: str) -> None:
        client = self.connection.client
        member = Scheduled(call_identify_id, account_id, 0).member
        await asyncio.gather(
            self.connection.run("archive forget", lambda: client.zrem(
                shard_key(shard_of(call_identify_id)), member)),
            self.connection.run("account index", lambda: client.zrem(
                account_key(account_id), call_identify_id)))


class MemoryArchiveIndex:
    """The index of the embedded store (local runs)."""

    def __init__(self, ttl_seconds: int = 3600) -> None:
        self.ttl_ms = ttl_seconds * 1000
        self._due: list[dict[str, int]] = [{} for _ in range(SHARDS)]
        self._accounts: dict[str, dict[str, int]] = {}

    async def schedule(self, call: Scheduled, now_ms: int) -> None:
        self._due[shard_of(call.call_identify_id)][call.member] = call.due_ms
        await self.hold(call.call_identify_id, call.account_id, now_ms)

    async def undo(self, call: Scheduled, now_ms: int) -> None:
        shard = self._due[shard_of(call.call_identify_id)]
        if shard.get(call.member) == call.due_ms:
            del shard[call.member]
        account = self._accounts.get(call.account_id, {})
        if account.get(call.call_identify_id) == now_ms + self.ttl_ms:
            del account[call.call_identify_id]

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[Scheduled]:
        ready = sorted((due, member) for member, due in self._due[shard].items()
                       if due <= upto_ms)
        return [Scheduled.parse(member, due) for due, member in ready[:limit]]

    async def done(self, call: Scheduled) -> bool:
        shard = self._due[shard_of(call.call_identify_id)]
        if shard.get(call.member) != call.due_ms:
            return False
        del shard[call.member]
        return True

    async def hold(self, call_identify_id: str, account_id: str, now_ms: int) -> None:
        account = self._accounts.setdefault(account_id, {})
        account[call_identify_id] = now_ms + self.ttl_ms
        for stale in [call for call, until in account.items() if until < now_ms]:
            del account[stale]

    async def oldest(self) -> int | None:
        return min((due for shard in self._due for due in shard.values()), default=None)

    async def of_account(self, account_id: str, limit: int) -> list[str]:
        calls = self._accounts.get(account_id, {})
        return [call for _, call in sorted((until, call) for call, until in calls.items())][
            :limit]

    async def forget(self, call_identify_id: str, account_id: str) -> None:
        self._due[shard_of(call_identify_id)].pop(
            Scheduled(call_identify_id, account_id, 0).member, None)
        self._accounts.get(account_id, {}).pop(call_identify_id, None)
