"""Transient agent failures are tried again — backoff with full jitter, the same messageId every
time, all inside the step's deadline — and every try is recorded; other failures are not retried.
Against real a2a-sdk agents behind a flaky front, on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from orchestrator_flows.a2a import A2AClient, AgentRequest
from orchestrator_flows.api import create_app
from orchestrator_flows.errors import AgentFailure, FlowConfigError
from orchestrator_flows.flow import A2AVersion, Agent, RetryPolicy
from orchestrator_flows.flow_file import parse_flow
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.agents import Recorder, build_agent_app, hang, raw_agent
from tests.support.collector import watched_collections
from tests.support.redis_servers import free_port
from tests.support.scripted import body

Serve = Callable[[Callable[[str], Any]], Any]
QUICK = RetryPolicy(attempts=3, base_delay_seconds=0.02, max_delay_seconds=0.1)


def request(url: str, policy: RetryPolicy = QUICK) -> AgentRequest:
    return AgentRequest(agent=Agent("greeting", url, "1.0", policy), text="hello",
                        metadata={"call_identify_id": "CALL-1"}, context_id="ctx-1")


async def flaky_agent(serve: Serve, failures: int, status: int = 503) -> tuple[str, Recorder]:
    front: dict[str, Recorder] = {}

    def make(url: str) -> Recorder:
        front["f"] = Recorder(build_agent_app("greeting", url), failures, status)
        return front["f"]

    url = await serve(make)
    return url, front["f"]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_error_is_retried_with_the_same_message_id_until_it_succeeds(
    serve: Serve, status: int
) -> None:
    url, front = await flaky_agent(serve, failures=2, status=status)
    reply = await A2AClient(timeout_seconds=5).send(request(url))
    assert reply.completed
    assert [a.outcome for a in reply.attempts] == [f"http_{status}"] * 2 + ["ok"]
    message_ids = {r["json"]["params"]["message"]["messageId"] for r in front.requests}
    assert len(front.requests) == 3
    assert len(message_ids) == 1


async def test_retries_stop_at_the_policy_s_attempts(serve: Serve) -> None:
    url, front = await flaky_agent(serve, failures=10)
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(url))
    assert failure.value.code == "agent_http_error"
    assert [a.outcome for a in failure.value.attempts] == ["http_503"] * 3
    assert len(front.requests) == 3


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_other_http_errors_are_not_retried(serve: Serve, status: int) -> None:
    url, front = await flaky_agent(serve, failures=1, status=status)
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(url))
    assert len(front.requests) == 1
    assert [a.outcome for a in failure.value.attempts] == [f"http_{status}"]


async def test_a_json_rpc_error_is_not_retried(serve: Serve) -> None:
    seen: list[int] = []

    async def rpc_error(rpc: dict[str, Any]) -> Any:
        from starlette.responses import JSONResponse

        seen.append(1)
        return JSONResponse({"jsonrpc": "2.0", "id": rpc["id"],
                             "error": {"code": -32603, "message": "internal"}})

    url = await serve(lambda url: raw_agent(rpc_error))
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(url))
    assert failure.value.code == "agent_rpc_error"
    assert len(seen) == 1


async def test_an_unreachable_agent_is_tried_each_time_then_reported() -> None:
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(f"http://127.0.0.1:{free_port()}/"))
    assert failure.value.code == "agent_unreachable"
    assert [a.outcome for a in failure.value.attempts] == ["agent_unreachable"] * 3


async def test_retries_never_outlast_the_step_s_deadline(serve: Serve) -> None:
    url, _ = await flaky_agent(serve, failures=100)
    slow = RetryPolicy(attempts=10, base_delay_seconds=0.4, max_delay_seconds=0.4)
    started = time.perf_counter()
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=1.0).send(request(url, slow))
    assert time.perf_counter() - started < 1.3
    assert len(failure.value.attempts) < 10


async def test_a_hanging_agent_is_not_retried_past_the_deadline(serve: Serve) -> None:
    url = await serve(lambda url: raw_agent(hang))
    started = time.perf_counter()
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=0.5).send(request(url))
    assert failure.value.code == "agent_timeout"
    assert time.perf_counter() - started < 1.0
    assert [a.outcome for a in failure.value.attempts] == ["agent_timeout"]


async def test_the_step_records_every_try(serve: Serve) -> None:
    url, _ = await flaky_agent(serve, failures=1)
    runtime = Runtime.build(Settings(agent_urls={"greeting": url}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)),
                                 base_url="http://api") as api:
        answer = (await api.post("/orchestrate", json=body("greeting", call="RETRY-1"))).json()
        steps = (await api.get("/session/RETRY-1/steps")).json()["steps"]
    await runtime.aclose()
    assert answer["status"] == "success"
    outcomes = [a["outcome"] for a in answer["response"]["attempts"]]
    assert outcomes == ["http_503", "ok"]
    assert steps[0]["response_data"]["attempts"] == answer["response"]["attempts"]


def test_retry_settings_come_from_the_flow_file() -> None:
    flow = parse_flow("""
agents:
  greeting:
    url: "http://127.0.0.1:9101/"
    retry: {attempts: 5, base_delay_ms: 50, max_delay_ms: 400}
  fallback: {url: "http://127.0.0.1:9110/", retry: {attempts: 1}}
fallback_agent: fallback
stages:
  - {id: 1, name: GREETING, intents: {greeting: greeting}}
""", source="retry.yaml")
    assert flow.agents["greeting"].retry == RetryPolicy(5, 0.05, 0.4)
    assert flow.agents["fallback"].retry.attempts == 1
    assert flow.agents["fallback"].retry.base_delay_seconds == 0.1  # defaults fill the rest


def test_a_bad_retry_setting_names_the_file_and_line() -> None:
    with pytest.raises(FlowConfigError, match=r"retry.yaml:3: .*attempts"):
        parse_flow("""
agents:
  greeting: {url: "http://127.0.0.1:9101/", retry: {attempts: 0}}
fallback_agent: greeting
stages:
  - {id: 1, name: GREETING, intents: {greeting: greeting}}
""", source="retry.yaml")


def test_full_jitter_stays_under_the_exponential_ceiling() -> None:
    policy = RetryPolicy(attempts=6, base_delay_seconds=0.1, max_delay_seconds=0.5)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        pauses = [policy.backoff(attempt) for _ in range(200)]
        assert all(0 <= p <= ceiling for p in pauses)
        assert max(pauses) > ceiling / 2  # jittered over the whole range, not fixed


def _answer_with(raw: bytes) -> Any:
    async def answer(_: dict[str, Any]) -> Any:
        from starlette.responses import Response

        return Response(raw, media_type="application/json")

    return answer


@pytest.mark.parametrize(("raw", "why"), [
    (b'{"jsonrpc": "2.0", "id": "x", "result": {"text": "\xff\xfe"}}', "not UTF-8"),
    (b"[" * 50_000 + b"]" * 50_000, "nested deeper"),
    (b'{"jsonrpc": "2.0", "id": "x", "result": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
     "nested deeper"),
])
async def test_invalid_utf8_and_deep_nesting_are_a_step_error_stored_only_as_a_code(
    serve: Serve, raw: bytes, why: str
) -> None:
    url = await serve(lambda url: raw_agent(_answer_with(raw)))
    runtime = Runtime.build(Settings(agent_urls={"greeting": url}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)),
                                 base_url="http://api") as api:
        with watched_collections() as seen:
            answer = await api.post("/orchestrate", json=body("greeting", call="BAD-ANSWER"))
        steps = (await api.get("/session/BAD-ANSWER/steps")).json()["steps"]
    await runtime.aclose()
    assert seen.starved == 0  # no collection started while the parser was deep
    assert answer.status_code == 200
    assert answer.json()["status"] == "error"
    error = answer.json()["response"]["error"]
    assert error["code"] == "agent_bad_response"
    assert why in error["message"]
    assert steps[0]["response_status"] == "error"
    assert steps[0]["response_data"]["text"] == ""  # nothing of the raw answer is kept


DEEP_CARD = b"[" * 50_000 + b"]" * 50_000


@pytest.mark.parametrize("pinned", [None, "1.0"])
async def test_an_agent_card_nested_past_the_parser_is_no_card(
    serve: Serve, pinned: A2AVersion | None
) -> None:
    """Read to learn the agent's protocol version (unpinned) or only its security (pinned, in
    the background): a card too deep to parse is as if the agent had none."""
    front: dict[str, Recorder] = {}

    def make(url: str) -> Any:
        front["f"] = Recorder(build_agent_app("greeting", url), 0, 503)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].endswith("agent-card.json"):
                from starlette.responses import Response

                await Response(DEEP_CARD, media_type="application/json")(scope, receive, send)
                return
            await front["f"](scope, receive, send)

        return app

    url = await serve(make)
    client = A2AClient(timeout_seconds=5)
    agent = Agent("greeting", url, pinned, QUICK)
    with watched_collections() as seen:
        reply = await client.send(AgentRequest(agent=agent, text="hello",
                                               metadata={"call_identify_id": "CALL-1"},
                                               context_id="ctx-1"))
        await asyncio.gather(*client._cards.values())  # the background read, if pinned
    assert reply.completed
    assert seen.starved == 0
    assert await client.protocol_version(agent) == (pinned or "1.0")  # no card: the default


async def test_a_connection_reset_is_retried_then_reported() -> None:
    """An agent host that accepts the connection, reads the request and resets it (TCP RST)."""
    import socket
    import struct

    resets = 0

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal resets
        sent = await reader.read(65536)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        resets += sent.startswith(b"POST")  # the message; its agent card is read aside
        writer.close()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(AgentFailure) as failure:
            await A2AClient(timeout_seconds=5).send(request(f"http://127.0.0.1:{port}/"))
    finally:
        server.close()
        await server.wait_closed()
    assert failure.value.code == "agent_unreachable"
    assert [a.outcome for a in failure.value.attempts] == ["agent_unreachable"] * 3
    assert resets == 3
