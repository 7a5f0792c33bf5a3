"""Whole calls through the HTTP API against a real Redis (standalone, cluster, TLS) and the ten
real a2a-sdk demo agents; concurrency; TTLs after every step; Redis down answers 503 fast."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from orchestrator_flows.api import create_app
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.scripted import body

WHOLE_CALL = (
    ("greeting", "Hello", "success", 2),
    ("verify_identity", "I am Sam", "input_required", 2),
    ("otp_verify", "my code is 482913", "success", 3),
    ("tell_me_a_joke", "tell me a joke", "success", 3),
    ("refund_request", "I was charged twice", "success", 4),
    ("process_refund", "yes, refund it", "success", 5),
    ("end_call", "bye", "success", None),
)

Api = Callable[..., Any]


@asynccontextmanager
async def api_client(**settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    runtime = Runtime.build(Settings(**settings))
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as c:
        try:
            yield c, runtime
        finally:
            await runtime.aclose()


async def drive_whole_call(api: httpx.AsyncClient, call: str) -> list[dict[str, Any]]:
    answers = []
    for intent, text, status, next_stage in WHOLE_CALL:
        response = await api.post("/orchestrate", json=body(intent, call=call, text=text))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["status"], answer["next_flow_id"]) == (status, next_stage), str(
            answer["response"]["error"])
        answers.append(answer)
    return answers


def raw_client(url: str, cluster: bool = False, **options: Any) -> Redis | RedisCluster:
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True, **options)
    return Redis.from_url(url, decode_responses=True, **options)


async def call_pttls(raw: Redis | RedisCluster, call: str) -> dict[str, int]:
    keys = [k async for k in raw.scan_iter(match=f"of:{{{call}}}*", count=1000)]
    return {k: int(await raw.pttl(k)) for k in keys}


@pytest.mark.parametrize("mode", ["standalone", "cluster"])
async def test_a_whole_call_through_real_redis_and_real_agents(
    request: pytest.FixtureRequest, demo_agent_urls: dict[str, str], mode: str
) -> None:
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    call = f"E2E-{mode}"
    async with api_client(redis_url=url, redis_mode=mode, agent_urls=demo_agent_urls) as (api, _):
        answers = await drive_whole_call(api, call)
        state = (await api.get(f"/session/{call}")).json()
        steps = (await api.get(f"/session/{call}/steps")).json()["steps"]
    final = answers[-1]
    assert final["is_complete"] is True
    assert final["session_summary"] == state
    assert [s["intent"] for s in steps] == [t[0] for t in WHOLE_CALL]
    assert [s["agent"] for s in steps] == [
        "greeting", "auth", "auth", "fallback", "refund", "refund", "closing"]
    # The code turn continued the task the identity turn opened.
    assert steps[1]["response_data"]["task_id"] == steps[2]["response_data"]["task_id"]
    assert steps[2]["response_data"]["data"].get("authenticated") is True


async def test_every_key_has_a_ttl_within_the_session_ttl_after_every_step(
    redis_url: str, demo_agent_urls: dict[str, str]
) -> None:
    raw = raw_client(redis_url)
    ttl = 120
    async with api_client(redis_url=redis_url, agent_urls=demo_agent_urls,
                          session_ttl_seconds=ttl) as (api, _):
        for intent, text, _status, _next in WHOLE_CALL:
            await api.post("/orchestrate", json=body(intent, call="TTL-1", text=text))
            pttls = await call_pttls(raw, "TTL-1")
            assert set(pttls) == {"of:{TTL-1}:state", "of:{TTL-1}:steps"}
            assert all(0 < v <= ttl * 1000 for v in pttls.values()), pttls
    await raw.aclose()


async def test_delete_removes_every_key_from_redis_but_the_ended_marker(
    redis_url: str, demo_agent_urls: dict[str, str]
) -> None:
    raw = raw_client(redis_url)
    async with api_client(redis_url=redis_url, agent_urls=demo_agent_urls,
                          session_ttl_seconds=120) as (api, _):
        await api.post("/orchestrate", json=body("greeting", call="DEL-1"))
        assert (await api.delete("/session/DEL-1")).status_code == 204
        late = await api.post("/orchestrate", json=body("verify_identity", call="DEL-1"))
    left = await call_pttls(raw, "DEL-1")
    await raw.aclose()
    assert list(left) == ["of:{DEL-1}:ended"]
    assert 0 < left["of:{DEL-1}:ended"] <= 120_000
    assert (late.status_code, late.json()["error"]["code"]) == (409, "session_ended")


async def test_twenty_concurrent_steps_on_one_call_lose_nothing(
    redis_url: str, demo_agent_urls: dict[str, str]
) -> None:
    async with api_client(redis_url=redis_url, agent_urls=demo_agent_urls) as (api, _):
        await api.post("/orchestrate", json=body("greeting", call="RACE-1"))
        responses = await asyncio.gather(*(
            api.post("/orchestrate", json=body("small_talk", call="RACE-1", text=f"turn {i}"))
            for i in range(20)
        ))
        steps = (await api.get("/session/RACE-1/steps")).json()["steps"]
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 409}
    assert all(r.json()["error"]["code"] == "step_in_progress" for r in responses
               if r.status_code == 409)
    accepted = sorted(f"turn {i}" for i, r in enumerate(responses) if r.status_code == 200)
    assert accepted
    assert sorted(s["input_message"] for s in steps[1:]) == accepted


async def test_two_hundred_concurrent_calls_all_complete(
    redis_url: str, demo_agent_urls: dict[str, str]
) -> None:
    async with api_client(redis_url=redis_url, agent_urls=demo_agent_urls) as (api, _):
        # A task group, not gather: should one call fail, the others are cancelled before the
        # runtime closes, instead of running on against closed clients.
        async with asyncio.TaskGroup() as calls:
            finals = [calls.create_task(drive_whole_call(api, f"MANY-{i:03d}"))
                      for i in range(200)]
        sizes = await asyncio.gather(*(
            api.get(f"/session/MANY-{i:03d}/steps") for i in range(200)
        ))
    assert all(call.result()[-1]["is_complete"] for call in finals)
    assert {len(r.json()["steps"]) for r in sizes} == {len(WHOLE_CALL)}


async def test_rediss_url_works_against_a_tls_redis(
    redis_tls: Any, demo_agent_urls: dict[str, str]
) -> None:
    async with api_client(redis_url=redis_tls.url, redis_ca_certs=redis_tls.ca_path,
                          agent_urls=demo_agent_urls) as (api, _):
        answers = await drive_whole_call(api, "TLS-1")
    assert answers[-1]["is_complete"] is True


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("method", "path"), [("POST", "/orchestrate"), ("GET", "/session/X"),
                                              ("GET", "/session/X/steps"),
                                              ("DELETE", "/session/X")])
async def test_redis_unreachable_answers_503_fast(
    demo_agent_urls: dict[str, str], method: str, path: str
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    async with api_client(redis_url=url, agent_urls=demo_agent_urls) as (api, _):
        started = time.monotonic()
        response = await api.request(method, path, json=body("greeting", call="X"))
        elapsed = time.monotonic() - started
    assert (response.status_code, response.json()["error"]["code"]) == (503, "store_unavailable")
    assert elapsed < 2.5  # a hang guard, not a speed target: the store deadline is 1.9 s


async def test_a_paused_redis_answers_503_not_a_hang(
    redis_server: Any, demo_agent_urls: dict[str, str]
) -> None:
    raw = raw_client(redis_server.url)
    async with api_client(redis_url=redis_server.url, agent_urls=demo_agent_urls) as (api, _):
        await raw.execute_command("CLIENT", "PAUSE", 2500, "ALL")
        paused_at = time.monotonic()
        response = await api.post("/orchestrate", json=body("greeting", call="PAUSED"))
        elapsed = time.monotonic() - paused_at
        assert response.status_code == 503
        assert elapsed < 2.5
        # Once the pause ends the same process serves the next step, no restart needed.
        await asyncio.sleep(max(0.0, 2.7 - (time.monotonic() - paused_at)))
        retry = await api.post("/orchestrate", json=body("greeting", call="PAUSED-2"))
        assert retry.status_code == 200
    await raw.aclose()
