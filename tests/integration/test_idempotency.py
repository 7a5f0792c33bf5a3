"""Idempotent turns through the HTTP API, on a real Redis (standalone and cluster) and real a2a-sdk
agents: a retried turn gets its first answer byte for byte, with no second agent call and no
second step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_end_to_end import WHOLE_CALL, api_client, raw_client
from tests.support.agents import Recorder, SlowExecutor, build_agent_app
from tests.support.scripted import body

Serve = Callable[[Callable[[str], Any]], Any]


async def recorded_greeting(serve: Serve, delay: float = 0.0) -> tuple[str, Recorder]:
    """The greeting agent, really served, counting the JSON-RPC requests it receives."""
    recorder: dict[str, Recorder] = {}

    def make(url: str) -> Recorder:
        executor = SlowExecutor("greeting", delay) if delay else None
        recorder["r"] = Recorder(build_agent_app("greeting", url, executor=executor))
        return recorder["r"]

    url = await serve(make)
    return url, recorder["r"]


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


@pytest.mark.parametrize("mode", ["standalone", "cluster"])
async def test_a_repeated_keyed_turn_gets_the_first_answer_without_a_second_agent_call(
    mode: str, redis_url: str, redis_cluster_url: str, serve: Serve
) -> None:
    url, agent = await recorded_greeting(serve)
    redis = redis_url if mode == "standalone" else redis_cluster_url
    async with api_client(redis_url=redis, redis_mode=mode,
                          agent_urls={"greeting": url}) as (api, _):
        turn = body("greeting", call=f"IDEM-{mode}")
        first = await api.post("/orchestrate", json=turn, headers=keyed("turn-1"))
        again = await api.post("/orchestrate", json=turn, headers=keyed("turn-1"))
        steps = (await api.get(f"/session/IDEM-{mode}/steps")).json()["steps"]
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert len(agent.requests) == 1
    assert len(steps) == 1


async def test_the_same_key_with_another_turn_is_refused_and_writes_nothing(
    redis_url: str, serve: Serve
) -> None:
    url, agent = await recorded_greeting(serve)
    async with api_client(redis_url=redis_url, agent_urls={"greeting": url}) as (api, _):
        await api.post("/orchestrate", json=body("greeting", call="IDEM-REUSE"),
                       headers=keyed("k"))
        before = (await api.get("/session/IDEM-REUSE")).content
        other = await api.post("/orchestrate", headers=keyed("k"),
                               json=body("greeting", call="IDEM-REUSE", text="something else"))
        after = (await api.get("/session/IDEM-REUSE")).content
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert other.json()["error"]["message"]
    assert after == before
    assert len(agent.requests) == 1


async def test_a_repeat_while_the_first_is_in_flight_waits_and_gets_its_answer(
    redis_url: str, serve: Serve
) -> None:
    url, agent = await recorded_greeting(serve, delay=1.0)
    async with api_client(redis_url=redis_url, agent_urls={"greeting": url}) as (api, _):
        turn = body("greeting", call="IDEM-WAIT")
        first = asyncio.create_task(api.post("/orchestrate", json=turn, headers=keyed("k")))
        await asyncio.sleep(0.3)
        during = await api.post("/orchestrate", json=turn, headers=keyed("k"))
        done = await first
    assert (during.status_code, during.content) == (200, done.content)
    assert len(agent.requests) == 1


async def test_without_waiting_a_repeat_while_the_first_is_in_flight_gets_409(
    redis_url: str, serve: Serve
) -> None:
    url, agent = await recorded_greeting(serve, delay=1.0)
    async with api_client(redis_url=redis_url, agent_urls={"greeting": url},
                          turn_wait_seconds=0) as (api, _):
        turn = body("greeting", call="IDEM-FLIGHT")
        first = asyncio.create_task(api.post("/orchestrate", json=turn, headers=keyed("k")))
        await asyncio.sleep(0.3)
        during = await api.post("/orchestrate", json=turn, headers=keyed("k"))
        done = await first
        after = await api.post("/orchestrate", json=turn, headers=keyed("k"))
    assert during.status_code == 409
    assert during.json()["error"]["code"] == "step_in_progress"
    assert during.headers["retry-after"]
    assert after.content == done.content
    assert len(agent.requests) == 1


async def test_fifty_concurrent_repeats_make_one_agent_call_and_one_step(
    redis_url: str, serve: Serve
) -> None:
    url, agent = await recorded_greeting(serve, delay=0.2)
    async with api_client(redis_url=redis_url, agent_urls={"greeting": url}) as (api, _):
        turn = body("greeting", call="IDEM-FIFTY")
        answers = await asyncio.gather(*(
            api.post("/orchestrate", json=turn, headers=keyed("same")) for _ in range(50)))
        steps = (await api.get("/session/IDEM-FIFTY/steps")).json()["steps"]
    ok = [a.content for a in answers if a.status_code == 200]
    assert {a.status_code for a in answers} <= {200, 409}
    assert ok
    assert len(set(ok)) == 1
    assert len(agent.requests) == 1
    assert len(steps) == 1


async def test_the_turn_that_completed_the_call_replays_with_its_summary(
    redis_url: str, demo_agent_urls: dict[str, str]
) -> None:
    async with api_client(redis_url=redis_url, agent_urls=demo_agent_urls) as (api, _):
        last = None
        for n, (intent, text, _, _) in enumerate(WHOLE_CALL):
            last = await api.post("/orchestrate", headers=keyed(f"turn-{n}"),
                                  json=body(intent, call="IDEM-WHOLE", text=text))
        assert last is not None
        again = await api.post("/orchestrate", headers=keyed(f"turn-{len(WHOLE_CALL) - 1}"),
                               json=body("end_call", call="IDEM-WHOLE", text="bye"))
        unkeyed = await api.post("/orchestrate", json=body("end_call", call="IDEM-WHOLE"))
    assert last.json()["is_complete"] is True
    assert last.json()["session_summary"]["steps"]
    assert again.content == last.content
    assert unkeyed.status_code == 409  # without the key, a new turn on a complete call


async def test_a_keyed_turn_that_was_refused_records_nothing_under_its_key(
    redis_url: str, demo_agent_urls: dict[str, str]
) -> None:
    async with api_client(redis_url=redis_url, agent_urls=demo_agent_urls) as (api, _):
        refused = await api.post("/orchestrate", headers=keyed("k"),
                                 json=body("end_call", call="IDEM-REFUSED"))
        raw = raw_client(redis_url)
        left = [k async for k in raw.scan_iter(match="of:{IDEM-REFUSED}*")]
        await raw.aclose()
        greeting = await api.post("/orchestrate", headers=keyed("k"),
                                  json=body("greeting", call="IDEM-REFUSED"))
    assert refused.status_code == 409
    assert left == []
    assert greeting.status_code == 200  # the key names no answered turn yet
    assert greeting.json()["status"] == "success"


@pytest.mark.parametrize("key", ["", "k" * 129, "ключ", " padded", "tab\tkey"])
async def test_a_malformed_key_is_refused_422(redis_url: str, key: str) -> None:
    async with api_client(redis_url=redis_url) as (api, _):
        request = api.build_request("POST", "/orchestrate", json=body("greeting", call="IDEM-BAD"))
        request.headers["Idempotency-Key"] = key
        response = await api.send(request)
        session = await api.get("/session/IDEM-BAD")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert "Idempotency-Key" in response.json()["error"]["message"]
    assert session.status_code == 404


async def test_keys_of_128_printable_characters_are_accepted(redis_url: str) -> None:
    key = "".join(chr(33 + i % 94) for i in range(128))
    async with api_client(redis_url=redis_url) as (api, _):
        response = await api.post("/orchestrate", headers=keyed(key),
                                  json=body("greeting", call="IDEM-LONG"))
    assert response.status_code == 200, response.text


