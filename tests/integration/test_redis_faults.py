"""Redis failing under the orchestrator, with real processes: a private redis-server stopped,
started late and restarted empty mid-step. The API answers 503 store_unavailable within the
store's deadline, never a hang or a 500; a step whose commit failed is never reported as success;
once Redis is back the same process serves the next step."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator_flows.kv.redis_connection import connect
from orchestrator_flows.store import CallKeys, Taken
from orchestrator_flows.store.redis_backend import RedisBackend
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


async def test_a_claim_that_reaches_a_stalled_redis_after_its_503_does_not_hold_the_call(
    private_redis: RedisProcess, demo_agent_urls: dict[str, str]
) -> None:
    """Redis stalls (SIGSTOP) with the claim in its socket; the turn answers 503. When Redis
    resumes it runs that claim: it must not take the lease for a turn nobody awaits, so the
    documented same-key retry runs at once instead of 409 for a whole lease."""
    private_redis.start()
    assert private_redis.proc is not None
    keyed = {"Idempotency-Key": "turn-1"}
    turn = body("greeting", call="STALL-1")
    async with api_client(redis_url=private_redis.url, agent_urls=demo_agent_urls) as (api, _):
        await api.post("/orchestrate", json=body("greeting", call="WARM-1"))  # pool and clock
        private_redis.proc.send_signal(signal.SIGSTOP)
        try:
            stalled = await api.post("/orchestrate", json=turn, headers=keyed)
            await asyncio.sleep(1.0)  # past the claim's deadline, still stalled
        finally:
            private_redis.proc.send_signal(signal.SIGCONT)
        retried = await api.post("/orchestrate", json=turn, headers=keyed)
        steps = await api.get("/session/STALL-1/steps")
    assert (stalled.status_code, stalled.json()["error"]["code"]) == (503, "store_unavailable")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "success"
    assert len(steps.json()["steps"]) == 1


@pytest.mark.parametrize("skew_ms", [-60_000, 60_000])
async def test_a_clock_far_from_redis_s_is_measured_not_trusted(
    redis_url: str, skew_ms: int
) -> None:
    """The give-up moment a claim carries is on Redis' clock as the instance measured it. An
    instance that believes the server a minute behind (its claims look late) or ahead still
    takes its claims, and measures the offset again on the way."""
    backend = RedisBackend(connect(redis_url, "standalone", socket_timeout=1.0,
                                   connect_timeout=1.0, max_connections=4))
    try:
        backend._clock_offset_ms = skew_ms
        taken = await backend.claim(CallKeys.of(f"SKEW{skew_ms}"), "token", 20_000, None)
        assert isinstance(taken, Taken)
        assert abs(backend._clock_offset_ms) < 1_000  # the same machine's clock, measured
    finally:
        await backend.close()


async def test_a_claim_sent_again_late_after_its_first_try_took_the_lease_keeps_it(
    redis_url: str,
) -> None:
    """After a dead connection a claim is sent once more with the same token; if the first
    send did take the lease, the second — however late — must answer it taken, not refuse it
    as late and leave the lease held by nobody."""
    backend = RedisBackend(connect(redis_url, "standalone", socket_timeout=1.0,
                                   connect_timeout=1.0, max_connections=4))
    keys = CallKeys.of("RESENT-1")
    try:
        assert isinstance(await backend.claim(keys, "token-1", 20_000, None), Taken)
        late_resend = await backend._claim(
            keys=[keys.claim, keys.state, keys.replies, keys.steps, keys.ended],
            args=["token-1", 20_000, "", 1])  # its client gave up in 1970
        assert late_resend[0] == 1
        too_late = await backend._claim(
            keys=[keys.claim, keys.state, keys.replies, keys.steps, keys.ended],
            args=["token-2", 20_000, "", 1])
        assert too_late[0] == 3
    finally:
        await backend.close()


async def test_scripts_flushed_from_redis_are_loaded_again_not_reported(redis_url: str) -> None:
    """Redis forgot the scripts (restarted, failed over, SCRIPT FLUSH): the next call answers
    NOSCRIPT, and the script is loaded and the call run, on the same round of the store call."""
    connection = connect(redis_url, "standalone", socket_timeout=1.0, connect_timeout=1.0,
                         max_connections=4)
    backend = RedisBackend(connection)
    keys = CallKeys.of("FLUSHED-1")
    try:
        assert isinstance(await backend.claim(keys, "token-1", 20_000, None), Taken)
        await connection.client.script_flush()
        await backend.release(keys, "token-1")
        assert await connection.client.exists(keys.claim) == 0
        await connection.client.script_flush()
        assert isinstance(await backend.claim(keys, "token-2", 20_000, None), Taken)
        assert await connection.client.get(keys.claim) == "token-2"
    finally:
        await backend.close()
