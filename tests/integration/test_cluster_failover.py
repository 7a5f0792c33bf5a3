"""A Redis Cluster failing over under the orchestrator: 3 primaries with a replica each, one
primary handed over to its replica (CLUSTER FAILOVER) between the steps of a call. The call goes
on without a restart of the process, and its trail holds every step the caller was told of."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from tests.integration.test_end_to_end import WHOLE_CALL, api_client
from tests.support.redis_servers import RedisCluster, start_cluster
from tests.support.scripted import body


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = start_cluster(tmp_path, masters=3, replicas=1)
    yield cluster
    cluster.stop()


async def fail_over_the_primary_of(cluster_url: str, key: str) -> None:
    """Promote the replica of the primary that holds `key`, and wait until it serves."""
    client = AsyncRedisCluster.from_url(cluster_url, decode_responses=True)
    try:
        await client.initialize()
        slot = client.keyslot(key)
        primary = client.get_node_from_key(key)
        assert primary is not None
        shards = await client.execute_command("CLUSTER", "SHARDS", target_nodes=primary)
        replica_port = None
        for shard in shards:
            ranges = shard["slots"]
            if any(ranges[i] <= slot <= ranges[i + 1] for i in range(0, len(ranges), 2)):
                replica_port = next(node["port"] for node in shard["nodes"]
                                    if node["role"] == "replica")
        assert replica_port is not None
        replica = client.get_node(host="127.0.0.1", port=replica_port)
        assert replica is not None
        await client.execute_command("CLUSTER", "FAILOVER", target_nodes=replica)
        for _ in range(100):
            role = await client.execute_command("ROLE", target_nodes=replica)
            if role[0] == "master":
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the replica did not take over")
    finally:
        await client.aclose()


async def test_a_call_goes_on_across_a_cluster_failover(
    replicated_cluster: RedisCluster, demo_agent_urls: dict[str, str]
) -> None:
    call = "FAILOVER-1"
    told = []
    async with api_client(redis_url=replicated_cluster.url, redis_mode="cluster",
                          agent_urls=demo_agent_urls) as (api, _):
        for n, (intent, text, status, _next) in enumerate(WHOLE_CALL):
            if n == 3:
                await fail_over_the_primary_of(replicated_cluster.url, f"of:{{{call}}}:state")
            for _attempt in range(20):  # a caller retries a 503 (the switch takes a moment)
                answer = await api.post("/orchestrate", json=body(intent, call=call, text=text))
                if answer.status_code != 503:
                    break
                await asyncio.sleep(0.2)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == status
            told.append(intent)
        steps = (await api.get(f"/session/{call}/steps")).json()["steps"]
    assert [s["intent"] for s in steps] == told
