"""Integration fixtures: the session store over every backend, each against a real server
(private redis-server, private 3-master Redis Cluster) or the embedded one."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from orchestrator_flows.runtime import Storage, tune_collector
from orchestrator_flows.settings import Settings
from orchestrator_flows.store import Backend, CallKeys, SessionStore
from orchestrator_flows.store.memory_backend import MemoryBackend

BACKENDS = ("embedded", "redis", "cluster")


@pytest.fixture(scope="package", autouse=True)
def a_served_heap() -> None:
    """The collector as a served process has it (`tune_collector`), over what this test process
    holds by now: the earlier tests' CDK apps and modules are a large heap a served process never
    has, and full collections over it stalled the event loop for 0.2-0.4 s (more on a loaded
    machine: past the 1 s Redis connect timeout, in a burst of 200 calls)."""
    gc.collect()
    tune_collector()


@dataclass
class Inspector:
    """Looks at what a backend really holds, from outside the store."""

    backend: Backend
    raw: Redis | RedisCluster | None

    async def pttls(self, call_identify_id: str) -> dict[str, int]:
        if isinstance(self.backend, MemoryBackend):
            return {k: self.backend.pttl_ms(k) for k in self.backend.keys_of(call_identify_id)}
        assert self.raw is not None
        pattern = CallKeys.of(call_identify_id).tag + "*"
        keys = [k async for k in self.raw.scan_iter(match=pattern, count=1000)]
        return {k: int(await self.raw.pttl(k)) for k in keys}

    async def command_calls(self) -> dict[str, int]:
        """Calls per command since the last reset (Redis only): the round trips a test made."""
        assert isinstance(self.raw, Redis)
        stats: dict[str, Any] = await self.raw.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    async def reset_stats(self) -> None:
        assert isinstance(self.raw, Redis)
        await self.raw.config_resetstat()


def _raw_client(url: str, kind: str) -> Redis | RedisCluster:
    if kind == "cluster":
        return RedisCluster.from_url(url, decode_responses=True)
    return Redis.from_url(url, decode_responses=True)


async def make_storage(kind: str, request: pytest.FixtureRequest) -> tuple[Storage, Inspector]:
    if kind == "embedded":
        storage = Storage.embedded()
        return storage, Inspector(storage.calls, None)
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    raw = _raw_client(url, kind)
    await raw.flushall()
    storage = Storage.on_redis(Settings(
        redis_url=url, redis_mode="cluster" if kind == "cluster" else "standalone",
        redis_socket_timeout_seconds=2.0, redis_connect_timeout_seconds=2.0,
        redis_max_connections=64))
    return storage, Inspector(storage.calls, raw)


@pytest.fixture(params=BACKENDS)
async def backend_and_inspector(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Backend, Inspector]]:
    storage, inspector = await make_storage(request.param, request)
    yield storage.calls, inspector
    await storage.close()
    if inspector.raw is not None:
        await inspector.raw.aclose()


@pytest.fixture
def store(backend_and_inspector: tuple[Backend, Inspector]) -> SessionStore:
    return SessionStore(backend=backend_and_inspector[0], ttl_seconds=300, lease_seconds=20)


@pytest.fixture
def inspector(backend_and_inspector: tuple[Backend, Inspector]) -> Inspector:
    return backend_and_inspector[1]
