"""A runtime with an archive, for the archive's integration tests: a real Redis (standalone or
cluster, one test each), moto's DynamoDB, scripted agents, and one clock for turns and sweepers
that the test moves on; `api` serves it over ASGI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from orchestrator_flows.archive.erasure import Eraser
from orchestrator_flows.archive.index import SHARDS, shard_key
from orchestrator_flows.archive.store import DynamoArchive
from orchestrator_flows.archive.sweeper import GRACE_MS, Sweeper
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from tests.support.archive_table import TABLE
from tests.support.scripted import ScriptedAgents, turn

IDLE = 600
TTL = 3600


@dataclass
class Harness:
    runtime: Runtime
    raw: Redis | RedisCluster
    archive: DynamoArchive
    dynamodb: Any
    now: float = field(default_factory=time.time)  # the clock of turns and sweepers

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sweeper(self, *, archive: Any = None, ahead: float = 0) -> Sweeper:
        """A sweeper on the harness's clock (`ahead` seconds ahead of it), run past the
        grace."""
        index = self.runtime.store.archive_index
        assert index is not None
        return Sweeper(store=self.runtime.store, index=index, archive=archive or self.archive,
                       clock=lambda: self.now + ahead + GRACE_MS / 1000 + 1)

    def eraser(self, *, archive: Any = None, batch: int = 50) -> Eraser:
        index = self.runtime.store.archive_index
        assert index is not None
        return Eraser(store=self.runtime.store, index=index, archive=archive or self.archive,
                      batch=batch)

    async def play(self, call: str, intents: tuple[str, ...], account: str = "ACC-1") -> None:
        for intent in intents:
            await self.runtime.turns.handle_turn(turn(intent, call=call, account=account))

    async def scheduled(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for shard in range(SHARDS):
            entries: list[Any] = await self.raw.zrange(shard_key(shard), 0, -1,
                                                        withscores=True)
            found |= {str(member).split(" ")[0]: int(score) for member, score in entries}
        return found


@pytest.fixture(params=["standalone", "cluster"])
async def harness(request: pytest.FixtureRequest, dynamodb: Any) -> AsyncIterator[Harness]:
    mode = request.param
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    settings = Settings(redis_url=url, redis_mode=mode, archive_table=TABLE,
                        archive_idle_seconds=IDLE, session_ttl_seconds=TTL)
    raw: Redis | RedisCluster = (RedisCluster.from_url(url, decode_responses=True)
                                 if mode == "cluster" else
                                 Redis.from_url(url, decode_responses=True))
    await raw.flushall()
    runtime = Runtime.build(settings, storage=Storage.of(settings), agents=ScriptedAgents())
    harness = Harness(runtime, raw, DynamoArchive(dynamodb, TABLE, 90), dynamodb)
    runtime.store.clock = lambda: harness.now
    yield harness
    await runtime.aclose()
    await raw.aclose()




@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    from orchestrator_flows.api import create_app

    harness.runtime.archives.opened = harness.archive
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(harness.runtime)),
                                 base_url="http://api") as client:
        yield client
