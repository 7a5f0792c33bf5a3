"""Which calls are due to be archived, and when: sorted sets in Redis, call id -> the moment
(epoch ms) the call is due. A turn schedules its call when it commits: idle-due
(ARCHIVE_IDLE_SECONDS after the turn) while the call goes on, due at once when it completes; the
sweeper archives what is due and takes it off, unless a turn moved it meanwhile.

Sixteen shards, each a key of its own hash tag, so that they spread over a Redis Cluster's nodes
and no shard is a hot key; a call's shard is fixed by its id. No KEYS, no SCAN, no keyspace
notifications: ElastiCache Serverless has none of them. The index is its own cursor: what the
sweeper has not archived is still there, due, on its next run.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

from orchestrator_flows.kv.redis_connection import RedisConnection

SHARDS = 16
KEY_PREFIX = "of:archive"
# Taken off only if its due moment is the one the sweeper read: a turn since then moved it.
_DONE_IF_UNCHANGED = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


def shard_of(call_identify_id: str) -> int:
    return zlib.crc32(call_identify_id.encode()) % SHARDS


def shard_key(shard: int) -> str:
    return f"{KEY_PREFIX}:{{{shard}}}"


class ArchiveIndex(Protocol):
    async def schedule(self, call_identify_id: str, due_ms: int) -> None: ...

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[tuple[str, int]]:
        """Calls of `shard` due at or before `upto_ms`, earliest first."""
        ...

    async def done(self, call_identify_id: str, due_ms: int) -> bool:
        """Take the call off, if it is still due at `due_ms`; whether it was."""
        ...

    async def oldest(self) -> int | None:
        """The earliest due moment of any shard (how far behind the sweeper is)."""
        ...


class RedisArchiveIndex:
    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self._done = connection.script(_DONE_IF_UNCHANGED)

    async def schedule(self, call_identify_id: str, due_ms: int) -> None:
        key = shard_key(shard_of(call_identify_id))
        await self.connection.run("archive schedule", lambda: self.connection.client.zadd(
            key, {call_identify_id: due_ms}))

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[tuple[str, int]]:
        found: list[Any] = await self.connection.run(
            "archive due", lambda: self.connection.client.zrangebyscore(
                shard_key(shard), "-inf", upto_ms, start=0, num=limit, withscores=True))
        return [(str(member), int(score)) for member, score in found]

    async def done(self, call_identify_id: str, due_ms: int) -> bool:
        key = shard_key(shard_of(call_identify_id))
        removed: int = await self.connection.run(
            "archive done", lambda: self._done(keys=[key], args=[call_identify_id, due_ms]))
        return removed == 1

    async def oldest(self) -> int | None:
        earliest: int | None = None
        for shard in range(SHARDS):
            first: list[Any] = await self.connection.run(
                "archive lag", lambda shard=shard: self.connection.client.zrange(  # type: ignore[misc]
                    shard_key(shard), 0, 0, withscores=True))
            if first and (earliest is None or int(first[0][1]) < earliest):
                earliest = int(first[0][1])
        return earliest


class MemoryArchiveIndex:
    """The index of the embedded store (local runs)."""

    def __init__(self) -> None:
        self._due: list[dict[str, int]] = [{} for _ in range(SHARDS)]

    async def schedule(self, call_identify_id: str, due_ms: int) -> None:
        self._due[shard_of(call_identify_id)][call_identify_id] = due_ms

    async def due(self, shard: int, upto_ms: int, limit: int) -> list[tuple[str, int]]:
        ready = sorted((due, call) for call, due in self._due[shard].items() if due <= upto_ms)
        return [(call, due) for due, call in ready[:limit]]

    async def done(self, call_identify_id: str, due_ms: int) -> bool:
        shard = self._due[shard_of(call_identify_id)]
        if shard.get(call_identify_id) != due_ms:
            return False
        del shard[call_identify_id]
        return True

    async def oldest(self) -> int | None:
        return min((due for shard in self._due for due in shard.values()), default=None)
