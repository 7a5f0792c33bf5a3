"""Redis failing under the orchestrator, with real processes: a private redis-server stopped,
started late and restarted empty mid-step. The API answers 503 store_unavailable within the
store's deadline, never a hang or a 500; a step whose commit failed is never reported as success;
once Redis is back the same process serves the next step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_end_to_end import api_client
from tests.support.agents import SlowExecutor, build_agent_app
from tests.support.redis_servers import RedisProcess, free_port
from tests.support.scripted import body

Serve = Callable[[Callable[[str], Any]], Any]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, not started: the test decides when it runs."""
    server = RedisProcess(free_port(), tmp_path)
    yield server
    server.stop()


async def slow_greeting(serve: Serve, delay: float) -> str:
    url: str = await serve(lambda url: build_agent_app(
        "greeting", url, executor=SlowExecutor("greeting", delay)))
    return url


async def test_redis_down_at_start_answers_503_then_serves_once_it_is_up(
    private_redis: RedisProcess, demo_agent_urls: dict[str, str]
) -> None:
    async with api_client(redis_url=private_redis.url, agent_urls=demo_agent_urls) as (api, _):
        started = time.monotonic()
        down = await api.post("/orchestrate", json=body("greeting", call="LATE-1"))
        elapsed = time.monotonic() - started
        await asyncio.to_thread(private_redis.start)
        up = await api.post("/orchestrate", json=body("greeting", call="LATE-1"))
    assert (down.status_code, down.json()["error"]["code"]) == (503, "store_unavailable")
    assert elapsed < 2.5
    assert up.status_code == 200
    assert up.json()["status"] == "success"


async def test_redis_stopped_after_the_claim_is_a_503_not_a_success(
    private_redis: RedisProcess, serve: Serve
) -> None:
    private_redis.start()
    agent = await slow_greeting(serve, delay=1.0)
    async with api_client(redis_url=private_redis.url, agent_urls={"greeting": agent}) as (api,
                                                                                           _):
        turn = asyncio.create_task(api.post("/orchestrate", json=body("greeting", call="MID-1")))
        await asyncio.sleep(0.4)  # claimed; the agent is working
        await asyncio.to_thread(private_redis.stop)
        started = time.monotonic()
        answer = await turn
        waited = time.monotonic() - started
        await asyncio.to_thread(private_redis.start)  # empty: Redis keeps nothing on disk here
        after = await api.post("/orchestrate", json=body("greeting", call="MID-2"))
        trail = await api.get("/session/MID-1/steps")
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "store_unavailable")
    assert waited < 1.0 + 2.5  # the agent's second, then the commit's deadline at most
    assert after.status_code == 200
    assert trail.status_code == 404  # nothing of the failed turn claims to have happened


async def test_redis_restarted_empty_mid_step_reports_the_turn_as_not_recorded(
    private_redis: RedisProcess, serve: Serve
) -> None:
    private_redis.start()
    agent = await slow_greeting(serve, delay=1.0)
    agents = {"greeting": agent, "fallback": agent}
    async with api_client(redis_url=private_redis.url, agent_urls=agents) as (api, _):
        first = await api.post("/orchestrate", json=body("greeting", call="RESTART-1"))
        assert first.status_code == 200
        turn = asyncio.create_task(api.post("/orchestrate", json=body(
            "small_talk", call="RESTART-1", text="still there?")))
        await asyncio.sleep(0.4)
        await asyncio.to_thread(private_redis.restart)
        answer = await turn
        state = await api.get("/session/RESTART-1")
        fresh = await api.post("/orchestrate", json=body("greeting", call="RESTART-2"))
    # Either the commit met the dead connection (503) or a new one and a Redis without the claim
    # (claim_lost): never a success for a step that is not stored.
    if answer.status_code == 200:
        assert answer.json()["status"] == "error"
        assert answer.json()["response"]["error"]["code"] == "claim_lost"
    else:
        assert (answer.status_code, answer.json()["error"]["code"]) == (503,
                                                                        "store_unavailable")
    assert state.status_code == 404  # the restart lost the session; nothing pretends otherwise
    assert fresh.status_code == 200


async def test_after_a_restart_the_pooled_connections_are_replaced_not_reported(
    private_redis: RedisProcess, demo_agent_urls: dict[str, str]
) -> None:
    private_redis.start()
    async with api_client(redis_url=private_redis.url, agent_urls=demo_agent_urls) as (api, _):
        # Fill the pool with several connections, then restart Redis under them.
        await asyncio.gather(*(api.post("/orchestrate", json=body("greeting", call=f"POOL-{n}"))
                               for n in range(8)))
        await asyncio.to_thread(private_redis.restart)
        answers = [await api.post("/orchestrate", json=body("greeting", call=f"AFTER-{n}"))
                   for n in range(8)]
        reads = [await api.get(f"/session/AFTER-{n}") for n in range(8)]
    assert [a.status_code for a in answers] == [200] * 8
    assert [r.status_code for r in reads] == [200] * 8
