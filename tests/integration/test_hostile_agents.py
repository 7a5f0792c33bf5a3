"""No agent answer can break a call: an agent whose answers hypothesis draws over the whole
JSON-RPC / A2A shape (non-finite numbers, lone surrogates, huge or deep values, wrong types at
every level, bytes that are not JSON) against a real Redis, standalone and cluster. Whatever it
says, the turn answers 200, every read of the call answers 200, a keyed repeat replays the turn
byte for byte, nothing holds the call's claim once the turn has answered, and the next turn of
the call works."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from starlette.responses import JSONResponse, Response

from orchestrator_flows.api import create_app
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.agents import raw_agent
from tests.support.hostile import ID, answer_bodies, with_rpc_id
from tests.support.scripted import body

# No retries and no breaker: every drawn answer must reach the engine as it is.
FLOW = """
agents:
  greeting: {url: "http://127.0.0.1:1/", retry: {attempts: 1}, circuit_breaker: {failures: 0}}
  fallback: {url: "http://127.0.0.1:1/", retry: {attempts: 1}, circuit_breaker: {failures: 0}}
fallback_agent: fallback
stages:
  - {id: 1, name: GREETING, intents: {greeting: greeting}}
  - {id: 2, name: CLOSING, intents: {end_call: fallback}}
"""


@dataclass
class HostileAgent:
    """Answers a greeting with the drawn body; anything else with a plain completed message."""

    next_body: bytes = b""
    served: int = 0

    async def answer(self, rpc: dict[str, Any]) -> Response:
        if rpc["params"]["message"]["metadata"]["intent"] == "greeting":
            self.served += 1
            return Response(with_rpc_id(self.next_body, rpc["id"]),
                            media_type="application/json")
        return JSONResponse({"jsonrpc": "2.0", "id": rpc["id"], "result": {"message": {
            "role": "ROLE_AGENT", "parts": [{"text": "anything else?"}]}}})


@dataclass
class Harness:
    api: httpx.AsyncClient
    raw: Redis | RedisCluster
    agent: HostileAgent
    calls: itertools.count[int] = field(default_factory=itertools.count)


@pytest.fixture(params=["standalone", "cluster"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path,
    serve: Callable[[Callable[[str], Any]], Any],
) -> AsyncIterator[Harness]:
    mode = request.param
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    agent = HostileAgent()
    agent_url = await serve(lambda _: raw_agent(agent.answer))
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    runtime = Runtime.build(Settings(
        redis_url=url, redis_mode=mode, orchestrator_config=flow, agent_timeout_seconds=5,
        agent_urls={"greeting": agent_url, "fallback": agent_url}))
    raw: Redis | RedisCluster = (RedisCluster if mode == "cluster" else Redis).from_url(
        url, decode_responses=True)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as api:
        yield Harness(api, raw, agent)
    await runtime.aclose()
    await raw.aclose()


def envelope(result: str) -> bytes:
    return ('{"jsonrpc":"2.0","id":' + json.dumps(ID) + ',"result":' + result + "}").encode()


def message(parts: str) -> bytes:
    return envelope('{"message":{"role":"ROLE_AGENT","parts":' + parts + "}}")


def task(state: str, rest: str = "") -> bytes:
    return envelope('{"task":{"id":"t-1","contextId":"c-1","status":{"state":"' + state + '"}'
                    + rest + "}}")


# Each way an answer went wrong before, always tried; hypothesis draws the rest.
@example(answer=message('[{"text":"fine"}]'))
@example(answer=task("TASK_STATE_INPUT_REQUIRED"))
@example(answer=message('[{"data":{"amount":NaN}}]'))
@example(answer=message('[{"data":{"a":Infinity,"b":-Infinity}}]'))
@example(answer=message('[{"data":{"big":1e400}}]'))
@example(answer=message('[{"text":"hi \\ud800 there"}]'))
@example(answer=message('[{"data":{"\\udc00":1}}]'))
@example(answer=message('[{"data":' + '{"a":' * 40 + "1" + "}" * 40 + "}]"))
@example(answer=message('[{"data":{"values":5}},{"data":7}]'))
@example(answer=task("TASK_STATE_COMPLETED", ',"artifacts":5'))
@example(answer=task("TASK_STATE_FAILED", ',"status":{"state":"failed","message":NaN}'))
@example(answer=envelope('{"task":{"id":"' + "t" * 5000 + '","status":{"state":"completed"}}}'))
@example(answer=envelope('{"message":{"parts":[],"taskId":{"a":1},"contextId":7}}'))
@example(answer=('{"jsonrpc":"2.0","id":' + json.dumps(ID)
                 + ',"error":{"code":NaN,"message":{"x":"\\ud800"}}}').encode())
@example(answer=b"\xff\xfe not json")
@settings(max_examples=75, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(answer=answer_bodies)
async def test_no_agent_answer_breaks_a_call(harness: Harness, answer: bytes) -> None:
    api, call = harness.api, f"HOSTILE-{next(harness.calls)}"
    harness.agent.next_body = answer
    turn = body("greeting", call=call, text="hello")
    keyed = {"Idempotency-Key": f"{call}-1"}

    first = await api.post("/orchestrate", json=turn, headers=keyed)
    assert first.status_code == 200, first.text
    outcome = first.json()
    assert outcome["status"] in ("success", "input_required", "error")
    assert await harness.raw.exists(f"of:{{{call}}}:claim") == 0  # the call is not left locked

    state = await api.get(f"/session/{call}")
    steps = await api.get(f"/session/{call}/steps")
    assert (state.status_code, steps.status_code) == (200, 200), state.text + steps.text
    assert [s["response_status"] for s in steps.json()["steps"]] == [outcome["status"]]
    replay = await api.post("/orchestrate", json=turn, headers=keyed)
    assert (replay.status_code, replay.content) == (200, first.content)

    # The call goes on: an intent its stage does not know goes to the (well-behaved) fallback.
    following = await api.post("/orchestrate", json=body("small_talk", call=call))
    assert following.status_code == 200, following.text
    assert following.json()["status"] == "success"
    assert len((await api.get(f"/session/{call}/steps")).json()["steps"]) == 2
