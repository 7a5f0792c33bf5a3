"""PII never stored, wherever an agent puts it: in a failed task's message, a JSON-RPC error (its
message or its code), the task and context ids it chooses, the keys of its data, a number, a
state it makes up. Every secret in every place, answered by a raw agent, stored in a real
Redis; afterwards nothing the call keeps in Redis, nor the answer, holds the value."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.responses import JSONResponse, Response

from orchestrator_flows.api import create_app
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.agents import raw_agent
from tests.support.scripted import body

FLOW = """
agents:
  greeting: {url: "http://127.0.0.1:1/", retry: {attempts: 1}, circuit_breaker: {failures: 0}}
  auth: {url: "http://127.0.0.1:1/", retry: {attempts: 1}, circuit_breaker: {failures: 0}}
fallback_agent: greeting
stages:
  - {id: 1, name: GREETING, intents: {greeting: greeting}}
  - {id: 2, name: AUTHENTICATION, intents: {verify_identity: auth}}
"""
# (what an agent may leak, as a JSON value, and the text that must not be stored)
SECRETS: list[tuple[Any, str]] = [
    ("4111111111111111", "4111111111111111"), ("4111-1111-1111-1111", "4111-1111-1111-1111"),
    (5500005555555559, "5500005555555559"), ("123-45-6789", "123-45-6789"),
    ("sam.rivera@example.com", "sam.rivera@example.com"), ("+14155552671", "4155552671"),
    ("(212) 555-0147", "555-0147"), ("482913", "482913"), (482913, "482913"),
]
# Where the agent puts it: a function of the secret -> the JSON-RPC envelope's result or error.
PLACES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "failed task message": lambda s: {"result": {"task": {"id": "t-1", "status": {
        "state": "TASK_STATE_FAILED", "message": {"parts": [{"text": f"no match for {s}"}]}}}}},
    "rejected task artifact": lambda s: {"result": {"task": {"id": "t-1", "status": {
        "state": "TASK_STATE_REJECTED"}, "artifacts": [{"parts": [{"text": f"card {s}"}]}]}}},
    "json-rpc error message": lambda s: {"error": {"code": -32000, "message": f"bad {s}"}},
    "json-rpc error code": lambda s: {"error": {"code": s, "message": "bad"}},
    "task id": lambda s: {"result": {"task": {"id": f"task:{s}", "contextId": "c-1",
                                              "status": {"state": "TASK_STATE_INPUT_REQUIRED"}}}},
    "context id": lambda s: {"result": {"task": {"id": "t-1", "contextId": f"ctx={s}",
                                                 "status": {"state": "input-required"}}}},
    "data key": lambda s: {"result": {"message": {"parts": [{"data": {str(s): "on file"}}]}}},
    "data value": lambda s: {"result": {"message": {"parts": [{"data": {"x": [{"y": s}]}}]}}},
    "made-up state": lambda s: {"result": {"task": {"id": "t-1", "status": {
        "state": f"stuck at {s}"}}}},
    "message ids": lambda s: {"result": {"message": {"taskId": f"{s}", "contextId": f"#{s}",
                                                     "parts": [{"text": "ok"}]}}},
}


@dataclass
class LeakyAgent:
    """Greets normally; at AUTHENTICATION answers with the secret where the test put it."""

    answer_with: dict[str, Any] = field(default_factory=dict)

    async def answer(self, rpc: dict[str, Any]) -> Response:
        if rpc["params"]["message"]["metadata"]["intent"] == "greeting":
            return JSONResponse({"jsonrpc": "2.0", "id": rpc["id"], "result": {"message": {
                "parts": [{"text": "hello"}]}}})
        return JSONResponse({"jsonrpc": "2.0", "id": rpc["id"], **self.answer_with})


@dataclass
class Harness:
    api: httpx.AsyncClient
    raw: Redis
    agent: LeakyAgent
    calls: itertools.count[int] = field(default_factory=itertools.count)

    async def everything_kept_for(self, call: str) -> str:
        keys = [k async for k in self.raw.scan_iter(match=f"of:{{{call}}}:*")]
        kept: list[Any] = []
        for key in keys:
            kind = await self.raw.type(key)
            if kind == "hash":
                kept.append(await self.raw.hgetall(key))
            elif kind == "list":
                kept.append(await self.raw.lrange(key, 0, -1))
            else:
                kept.append(await self.raw.get(key))
        return json.dumps(kept, ensure_ascii=False)


@pytest.fixture
async def harness(
    redis_url: str, tmp_path: Path, serve: Callable[[Callable[[str], Any]], Any],
) -> AsyncIterator[Harness]:
    agent = LeakyAgent()
    url = await serve(lambda _: raw_agent(agent.answer))
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    runtime = Runtime.build(Settings(
        redis_url=redis_url, orchestrator_config=flow, agent_urls={"greeting": url, "auth": url}))
    raw = Redis.from_url(redis_url, decode_responses=True)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        yield Harness(api, raw, agent)
    await runtime.aclose()
    await raw.aclose()


async def test_what_an_agent_leaks_is_never_stored_nor_answered(harness: Harness) -> None:
    # Every secret in every place: a deterministic grid, not a sample of it.
    for (value, text), place in itertools.product(SECRETS, sorted(PLACES)):
        call = f"PII-{next(harness.calls)}"
        harness.agent.answer_with = PLACES[place](value)
        await harness.api.post("/orchestrate", json=body("greeting", call=call))
        # The caller's own key holds the secret too: keys are filed by digest, never as sent.
        answer = await harness.api.post("/orchestrate", headers={"Idempotency-Key": f"k {text}"},
                                        json=body("verify_identity", call=call, text="it's me"))
        where = f"{text!r} in the {place}"
        assert answer.status_code == 200, (where, answer.text)
        assert text not in answer.text, where
        assert text not in await harness.everything_kept_for(call), where
        assert text not in (await harness.api.get(f"/session/{call}/steps")).text, where
