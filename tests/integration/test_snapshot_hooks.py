"""SnapStart's hooks, run as the Lambda runtime runs them (from snapshot_restore_py's registry)
against a real redis-server: no socket is carried into a snapshot, and no randomness or
credential is shared by the environments restored from one."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import snapshot_restore_py
from redis.asyncio.cluster import RedisCluster

from orchestrator_flows import snapshot
from orchestrator_flows.a2a import A2AClient
from orchestrator_flows.kv.iam_auth import IamAuth
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.redis_servers import RedisProcess


def run_hooks(registry: list[Any], runtime: Runtime) -> int:
    """Call this runtime's hooks as Lambda does (func, args, kwargs); how many ran."""
    ran = 0
    for func, args, kwargs in registry:
        if args and args[0] is runtime:
            func(*args, **kwargs)
            ran += 1
    return ran


def clients(server: RedisProcess, checker: redis.Redis) -> int:
    """Connections the server holds, less the checker's own."""
    return len(checker.client_list()) - 1


@pytest.fixture
def lambda_like(redis_url: str) -> Iterator[tuple[Runtime, asyncio.AbstractEventLoop]]:
    """A runtime and its one loop, as a Lambda execution environment holds them."""
    loop = asyncio.new_event_loop()
    runtime = Runtime.build(Settings(redis_url=redis_url, redis_max_connections=8))
    assert snapshot.register(runtime, loop)
    yield runtime, loop
    loop.run_until_complete(runtime.aclose())
    loop.close()


def test_before_the_snapshot_every_redis_and_agent_connection_is_closed(
        lambda_like: tuple[Runtime, asyncio.AbstractEventLoop],
        redis_server: RedisProcess) -> None:
    runtime, loop = lambda_like
    checker = redis.Redis(port=redis_server.port)
    baseline = clients(redis_server, checker)

    async def busy() -> None:  # several in flight at once: several pooled connections
        await asyncio.gather(*(runtime.store.get(f"SNAP-{i}") for i in range(6)))

    loop.run_until_complete(busy())
    assert clients(redis_server, checker) > baseline
    agents = runtime.agents
    assert isinstance(agents, A2AClient)
    _ = agents.transport  # (*) an agent transport built before the snapshot (a warm-up's)
    assert run_hooks(snapshot_restore_py.get_before_snapshot(), runtime) == 1
    deadline = time.monotonic() + 5
    while clients(redis_server, checker) > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert clients(redis_server, checker) == baseline  # the server saw every socket close
    assert agents._transport is None  # (*) rebuilt on first use, after the restore
    # After the restore the runtime opens new connections by itself.
    loop.run_until_complete(busy())
    assert clients(redis_server, checker) > baseline
    checker.close()


def test_environments_restored_from_one_snapshot_draw_different_claim_tokens(
        lambda_like: tuple[Runtime, asyncio.AbstractEventLoop]) -> None:
    runtime, _ = lambda_like
    snapshotted = random.getstate()  # what every restored environment starts from
    drawn = []
    for _ in range(2):
        random.setstate(snapshotted)
        assert run_hooks(snapshot_restore_py.get_after_restore(), runtime) == 1
        drawn.append(random.getrandbits(96))  # the session store's claim token
    assert drawn[0] != drawn[1]
    # Without the hook the two environments would fence with the same token.
    random.setstate(snapshotted)
    first = random.getrandbits(96)
    random.setstate(snapshotted)
    assert random.getrandbits(96) == first


def test_after_the_restore_no_credential_from_before_the_snapshot_is_kept(
        lambda_like: tuple[Runtime, asyncio.AbstractEventLoop]) -> None:
    from aws_lambda_powertools.utilities.parameters import base

    runtime, _ = lambda_like
    assert isinstance(runtime.agents, A2AClient)
    kept: dict[str, Any] = runtime.agents._credentials
    kept["billing"] = object()  # an agent's secret, read at init
    providers: dict[str, Any] = base.DEFAULT_PROVIDERS  # type: ignore[attr-defined]
    providers["secrets"] = object()  # Powertools' provider and its boto3 client
    runtime.archives.opened = object()  # type: ignore[assignment]  # the archive's boto3
    run_hooks(snapshot_restore_py.get_after_restore(), runtime)
    assert not kept
    assert "secrets" not in providers
    assert runtime.archives.opened is None


def test_on_a_cluster_the_client_finds_its_nodes_again_after_the_snapshot(
        redis_cluster_url: str) -> None:
    loop = asyncio.new_event_loop()
    runtime = Runtime.build(Settings(redis_url=redis_cluster_url, redis_mode="cluster"))
    try:
        loop.run_until_complete(runtime.store.get("SNAP-CLUSTER"))
        snapshot.before_snapshot(runtime, loop)
        assert runtime.storage.redis is not None
        cluster = runtime.storage.redis.client
        assert isinstance(cluster, RedisCluster)
        def topology() -> object:  # the node the client knows the cluster by, if any
            return cluster.nodes_manager.default_node

        assert topology() is None  # nothing kept open
        assert loop.run_until_complete(runtime.store.get("SNAP-CLUSTER")) is None
        assert topology() is not None
    finally:
        loop.run_until_complete(runtime.aclose())
        loop.close()


def test_after_the_restore_the_cache_s_iam_token_is_signed_anew(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    runtime = Runtime.build(Settings(redis_url=redis_url, redis_iam_user="orchestrator-flows-dev",
                                     redis_cache_name="of-dev-1234abcd", aws_region="eu-west-1"))
    snapshot.register(runtime, loop)
    try:
        assert runtime.storage.redis is not None
        auth = runtime.storage.redis.credentials
        assert isinstance(auth, IamAuth)
        auth._token = ("signed-at-init", float("inf"))  # a token kept in the snapshot
        run_hooks(snapshot_restore_py.get_after_restore(), runtime)
        assert auth._token is None
    finally:
        loop.run_until_complete(runtime.aclose())
        loop.close()
