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

Beside the shards, one sorted set per account (`of:account:{<account>}`, call id -> the same due
moment) holds the account's calls that are in Redis and not yet archived: with the archive's
account index (GSI1), every call an erasure must find. It is written with the shard, in the same
round trip's time (the two commands are in flight together), and its entries leave with the
shard's.
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
    async def schedule(self, call: Scheduled) -> None: ...

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[Scheduled]:
        """Calls of `shard` due at or before `upto_ms`, earliest first."""
        ...

    async def done(self, call: Scheduled) -> bool:
        """Take the call off, if it is still due at `call.due_ms`; whether it was."""
        ...

    async def oldest(self) -> int | None:
        """The earliest due moment of any shard (how far behind the sweeper is)."""
        ...

    async def of_account(self, account_id: str, limit: int) -> list[str]:
        """Up to `limit` of the account's calls that are in the index."""
        ...

    async def forget(self, call_identify_id: str, account_id: str) -> None:
        """Take the call off, whenever it is due (an erased call)."""
        ...


class RedisArchiveIndex:
    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self._done = connection.script(_DONE_IF_UNCHANGED)

    async def schedule(self, call: Scheduled) -> None:
        shard = shard_key(shard_of(call.call_identify_id))

        async def both() -> Any:
            # One pipeline, not two commands gathered: half the tasks and one write to each
            # node (on a cluster the pipeline sends each node its own).
            pipe = self.connection.client.pipeline(transaction=False)
            pipe.zadd(shard, {call.member: call.due_ms})
            pipe.zadd(account_key(call.account_id), {call.call_identify_id: call.due_ms})
            return await pipe.execute()

        await self.connection.run("archive schedule", both)

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[Scheduled]:
        found: list[Any] = await self.connection.run(
            "archive due", lambda: self.connection.client.zrangebyscore(
                shard_key(shard), "-inf", upto_ms, start=0, num=limit, withscores=True))
        return [Scheduled.parse(str(member), int(score)) for member, score in found]

    async def done(self, call: Scheduled) -> bool:
        shard = shard_key(shard_of(call.call_identify_id))
        removed, _ = await asyncio.gather(
            self.connection.run("archive done", lambda: self._done(
                keys=[shard], args=[call.member, call.due_ms])),
            self.connection.run("account index", lambda: self._done(
                keys=[account_key(call.account_id)], args=[call.call_identify_id, call.due_ms])))
        return bool(removed == 1)

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

    def __init__(self) -> None:
        self._due: list[dict[str, int]] = [{} for _ in range(SHARDS)]
        self._accounts: dict[str, dict[str, int]] = {}

    async def schedule(self, call: Scheduled) -> None:
        self._due[shard_of(call.call_identify_id)][call.member] = call.due_ms
        self._accounts.setdefault(call.account_id, {})[call.call_identify_id] = call.due_ms

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[Scheduled]:
        ready = sorted((due, member) for member, due in self._due[shard].items()
                       if due <= upto_ms)
        return [Scheduled.parse(member, due) for due, member in ready[:limit]]

    async def done(self, call: Scheduled) -> bool:
        shard = self._due[shard_of(call.call_identify_id)]
        account = self._accounts.get(call.account_id, {})
        if account.get(call.call_identify_id) == call.due_ms:
            del account[call.call_identify_id]
        if shard.get(call.member) != call.due_ms:
            return False
        del shard[call.member]
        return True

    async def oldest(self) -> int | None:
        return min((due for shard in self._due for due in shard.values()), default=None)

    async def of_account(self, account_id: str, limit: int) -> list[str]:
        calls = self._accounts.get(account_id, {})
        return [call for _, call in sorted((due, call) for call, due in calls.items())][:limit]

    async def forget(self, call_identify_id: str, account_id: str) -> None:
        self._due[shard_of(call_identify_id)].pop(
            Scheduled(call_identify_id, account_id, 0).member, None)
        self._accounts.get(account_id, {}).pop(call_identify_id, None)
