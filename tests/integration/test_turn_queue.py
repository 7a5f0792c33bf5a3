"""Turns that wait their turn (TURN_WAIT_SECONDS), through the HTTP API of two instances
sharing a real Redis (standalone and cluster), against a real a2a-sdk agent: concurrent turns of
one call are answered in the order they reached the claim, none refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from orchestrator_flows.local.demo_agents import build_agent_app
from orchestrator_flows.runtime import Storage
from orchestrator_flows.session import Session
from orchestrator_flows.settings import Settings
from orchestrator_flows.store import CallKeys, SessionStore
from tests.integration.test_end_to_end import api_client, raw_client
from tests.support.agents import SlowExecutor
from tests.support.scripted import body

Serve = Callable[[Callable[[str], Any]], Any]
TURNS = 10


async def until_queued(raw: Redis | RedisCluster, call: str, count: int) -> None:
    """Until `count` turns wait in the call's queue (or, for 0, one holds its claim)."""
    keys = CallKeys.of(call)
    for _ in range(1000):
        if count == 0 and await raw.exists(keys.claim):
            return
        if count and await raw.llen(keys.queue) == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} turns never queued")


@pytest.mark.parametrize("mode", ["standalone", "cluster"])
async def test_ten_concurrent_turns_are_answered_in_arrival_order_with_no_409(
    request: pytest.FixtureRequest, serve: Serve, mode: str
) -> None:
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    agent = await serve(lambda at: build_agent_app(
        "fallback", at, executor=SlowExecutor("fallback", 0.1)))
    call = f"QUEUE-{mode}"
    raw = raw_client(url, cluster=mode == "cluster")
    settings = {"redis_url": url, "redis_mode": mode, "agent_urls": {"fallback": agent}}
    async with api_client(**settings) as (one, _), api_client(**settings) as (two, _):
        turns = []
        for n in range(TURNS):
            instance = one if n % 2 == 0 else two  # the wake-up crosses instances
            turns.append(asyncio.create_task(instance.post("/orchestrate", json=body(
                "small_talk", call=call, text=f"turn {n}"))))
            await until_queued(raw, call, n)  # it has reached the claim: its place is set
        answers = await asyncio.gather(*turns)
        steps = (await one.get(f"/session/{call}/steps")).json()["steps"]
    await raw.aclose()
    assert [a.status_code for a in answers] == [200] * TURNS
    assert [s["input_message"] for s in steps] == [f"turn {n}" for n in range(TURNS)]
    assert [s["step_number"] for s in steps] == list(range(1, TURNS + 1))


async def test_commits_are_not_kept_waiting_by_turns_that_wait(redis_url: str) -> None:
    """Forty turns waiting on four calls with four connections: a quarter of them listen, the
    rest serve claims and commits, so each holder's commit goes through (no 503)."""
    storage = Storage.on_redis(Settings(redis_url=redis_url, redis_max_connections=4))
    store = SessionStore(backend=storage.calls, ttl_seconds=300, lease_seconds=20)
    calls = [f"POOL-{n}" for n in range(4)]
    holders = [await store.claim(call) for call in calls]
    waiting = [asyncio.create_task(store.claim(call, None, 10.0)) for call in calls
               for _ in range(10)]
    await asyncio.sleep(0.5)
    try:
        for holder in holders:
            await store.commit(holder, Session(call_identify_id=holder.call_identify_id,
                                               account_id="ACC", eci="ECI", context_id="ctx"),
                               '{"step_number": 1}')
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await storage.close()
