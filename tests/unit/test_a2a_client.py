"""The A2A client's wire format and answer reduction, over httpx.MockTransport.
(Real a2a-sdk agents are exercised in tests/integration/test_a2a_against_agents.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from orchestrator_flows.a2a import A2AClient, AgentRequest, version_from_card
from orchestrator_flows.errors import AgentFailure
from orchestrator_flows.flow import Agent

AGENT = Agent("auth", "http://agent.test/rpc", "1.0")
Handler = Callable[[httpx.Request], httpx.Response]


def rpc_result(request: httpx.Request, result: Any) -> httpx.Response:
    rpc_id = json.loads(request.content)["id"]
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": rpc_id, "result": result})


def client(handler: Handler, **options: Any) -> A2AClient:
    return A2AClient(timeout_seconds=5.0, transport=httpx.MockTransport(handler), **options)


def request(agent: Agent = AGENT, **changes: Any) -> AgentRequest:
    fields: dict[str, Any] = {"agent": agent, "text": "hello", "metadata": {"intent": "x"},
                              "context_id": "ctx-1", **changes}
    return AgentRequest(**fields)


async def test_v1_request_is_send_message_with_version_header() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return rpc_result(req, {"message": {"role": "ROLE_AGENT", "parts": [{"text": "hi"}]}})

    await client(handler).send(request(task_id="t-9"))
    sent = json.loads(seen[0].content)
    assert seen[0].headers["a2a-version"] == "1.0"
    assert sent["method"] == "SendMessage"
    message = sent["params"]["message"]
    assert message["role"] == "ROLE_USER"
    assert message["parts"] == [{"text": "hello"}]
    assert (message["contextId"], message["taskId"]) == ("ctx-1", "t-9")
    assert message["metadata"] == {"intent": "x"}
    assert message["messageId"]


async def test_v03_request_is_message_send_with_kinds() -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        return rpc_result(req, {"kind": "message", "role": "agent",
                                "parts": [{"kind": "text", "text": "hi"}]})

    reply = await client(handler).send(request(Agent("a", "http://agent.test/", "0.3")))
    assert seen[0]["method"] == "message/send"
    message = seen[0]["params"]["message"]
    assert (message["role"], message["kind"]) == ("user", "message")
    assert message["parts"] == [{"kind": "text", "text": "hello"}]
    assert (reply.text, reply.state, reply.a2a_version) == ("hi", "completed", "0.3")


async def test_completed_task_is_reduced_from_status_message_and_artifacts() -> None:
    task = {
        "id": "t-1", "contextId": "ctx-1",
        "status": {"state": "TASK_STATE_COMPLETED",
                   "message": {"role": "ROLE_AGENT", "parts": [{"text": "Refund issued."}]}},
        "artifacts": [{"artifactId": "a", "parts": [{"text": "Ref R-1"},
                                                     {"data": {"refund_id": "R-1"}},
                                                     {"data": {"amount": 12.5}}]}],
    }
    reply = await client(lambda r: rpc_result(r, {"task": task})).send(request())
    assert (reply.text, reply.data, reply.state, reply.task_id, reply.context_id) == (
        "Refund issued.\nRef R-1", {"refund_id": "R-1", "amount": 12.5}, "completed", "t-1",
        "ctx-1")


async def test_v03_input_required_task_is_reduced() -> None:
    task = {"kind": "task", "id": "t-2", "contextId": "c",
            "status": {"state": "input-required",
                       "message": {"kind": "message", "role": "agent", "messageId": "m",
                                   "parts": [{"kind": "text", "text": "Code?"}]}}}
    agent = Agent("a", "http://agent.test/", "0.3")
    reply = await client(lambda r: rpc_result(r, task)).send(request(agent))
    assert (reply.state, reply.task_id, reply.text, reply.completed) == (
        "input-required", "t-2", "Code?", False)


@pytest.mark.parametrize(
    ("state", "code"),
    [("TASK_STATE_FAILED", "agent_task_failed"), ("TASK_STATE_REJECTED", "agent_task_rejected"),
     ("TASK_STATE_CANCELED", "agent_task_canceled"),
     ("TASK_STATE_WORKING", "agent_task_unfinished")],
)
async def test_unsuccessful_task_states_are_failures(state: str, code: str) -> None:
    task = {"id": "t-3", "contextId": "c", "status": {"state": state}}
    with pytest.raises(AgentFailure) as failure:
        await client(lambda r: rpc_result(r, {"task": task})).send(request())
    assert failure.value.code == code
    assert failure.value.detail["task_id"] == "t-3"


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(500, text="boom"), "agent_http_error"),
        (httpx.Response(404), "agent_http_error"),
        (httpx.Response(200, text="<html>"), "agent_bad_response"),
        (httpx.Response(200, json=[1, 2]), "agent_bad_response"),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": "other", "result": {}}),
         "agent_bad_response"),
        (httpx.Response(200, content=b"\xff\xfe\x00"), "agent_bad_response"),
    ],
    ids=["500", "404", "html", "array", "id-mismatch", "invalid-utf8"],
)
async def test_bad_answers_are_failures(response: httpx.Response, code: str) -> None:
    with pytest.raises(AgentFailure) as failure:
        await client(lambda r: response).send(request())
    assert failure.value.code == code


async def test_wrong_shaped_result_is_a_bad_response() -> None:
    with pytest.raises(AgentFailure) as failure:
        await client(lambda r: rpc_result(r, {"foo": 1})).send(request())
    assert failure.value.code == "agent_bad_response"


async def test_task_without_state_is_a_bad_response() -> None:
    with pytest.raises(AgentFailure, match="without state"):
        await client(lambda r: rpc_result(r, {"task": {"id": "t", "status": {}}})).send(request())


async def test_json_rpc_error_is_a_failure_with_its_code() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        rpc_id = json.loads(req.content)["id"]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rpc_id,
                                         "error": {"code": -32001, "message": "Task not found"}})

    with pytest.raises(AgentFailure) as failure:
        await client(handler).send(request())
    assert (failure.value.code, failure.value.detail["rpc_code"]) == ("agent_rpc_error", -32001)


def raw_answer(text: str) -> Handler:
    """An agent answering this JSON text, `ID` standing for the request's id."""
    def handler(req: httpx.Request) -> httpx.Response:
        rpc_id = json.dumps(json.loads(req.content)["id"])
        return httpx.Response(200, content=text.replace("ID", rpc_id).encode())
    return handler


@pytest.mark.parametrize("answer", [
    '{"jsonrpc":"2.0","id":ID,"result":{"message":{"parts":[{"data":{"x":NaN}}]}}}',
    '{"jsonrpc":"2.0","id":ID,"result":{"message":{"parts":[{"data":{"x":Infinity}}]}}}',
    '{"jsonrpc":"2.0","id":ID,"result":{"message":{"parts":[{"data":{"x":-Infinity}}]}}}',
    '{"jsonrpc":"2.0","id":ID,"result":{"message":{"parts":[{"data":{"x":1e400}}]}}}',
    '{"jsonrpc":"2.0","id":ID,"error":{"code":NaN,"message":"x"}}',
], ids=["nan", "infinity", "minus-infinity", "past-float-range", "nan-rpc-code"])
async def test_non_finite_numbers_are_a_bad_response(answer: str) -> None:
    with pytest.raises(AgentFailure, match="non-finite number") as failure:
        await client(raw_answer(answer)).send(request())
    assert failure.value.code == "agent_bad_response"


@pytest.mark.parametrize("answer", [
    '{"jsonrpc":"2.0","id":ID,"result":{"message":{"parts":[{"text":"hi \\ud800"}]}}}',
    '{"jsonrpc":"2.0","id":ID,"result":{"message":{"parts":[{"data":{"\\udfff":1}}]}}}',
    '{"jsonrpc":"2.0","id":ID,"error":{"code":1,"message":"\\udbff"}}',
], ids=["in-text", "in-a-key", "in-an-rpc-error"])
async def test_lone_surrogates_are_a_bad_response(answer: str) -> None:
    with pytest.raises(AgentFailure, match="lone surrogate") as failure:
        await client(raw_answer(answer)).send(request())
    assert failure.value.code == "agent_bad_response"


async def test_wrong_types_inside_a_right_shape_are_tolerated_or_refused_never_raised() -> None:
    completed_with_bad_artifacts = ('{"jsonrpc":"2.0","id":ID,"result":{"task":{"id":"t",'
                                    '"status":{"state":"completed"},"artifacts":5}}}')
    reply = await client(raw_answer(completed_with_bad_artifacts)).send(request())
    assert (reply.state, reply.text) == ("completed", "")
    values_twice = ('{"jsonrpc":"2.0","id":ID,"result":{"message":{"taskId":{"a":1},'
                    '"contextId":7,"parts":[{"data":{"values":5}},{"data":7}]}}}')
    reply = await client(raw_answer(values_twice)).send(request())
    assert (reply.data, reply.task_id, reply.context_id) == ({"values": [5, 7]}, None, None)
    with pytest.raises(AgentFailure) as failure:
        await client(raw_answer('{"jsonrpc":"2.0","id":ID,"error":{"code":"x"}}')).send(
            request())
    assert (failure.value.code, failure.value.detail["rpc_code"]) == ("agent_rpc_error", None)


async def test_a_task_id_past_any_sensible_length_is_a_bad_response() -> None:
    task = {"id": "t" * 5000, "status": {"state": "TASK_STATE_COMPLETED"}}
    with pytest.raises(AgentFailure, match="task without an id") as failure:
        await client(lambda r: rpc_result(r, {"task": task})).send(request())
    assert failure.value.code == "agent_bad_response"


async def test_connection_error_is_unreachable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(AgentFailure) as failure:
        await client(handler).send(request())
    assert failure.value.code == "agent_unreachable"


async def test_declared_body_over_the_limit_is_refused() -> None:
    with pytest.raises(AgentFailure) as failure:
        await client(lambda r: httpx.Response(200, content=b"x" * 2048),
                     max_body_bytes=1024).send(request())
    assert failure.value.code == "agent_response_too_large"


async def test_streamed_body_over_the_limit_is_refused_without_reading_it_whole() -> None:
    produced: list[int] = []

    async def endless() -> Any:
        for _ in range(1000):
            produced.append(1)
            yield b"x" * 512

    with pytest.raises(AgentFailure) as failure:
        await client(lambda r: httpx.Response(200, content=endless()),
                     max_body_bytes=1024).send(request())
    assert failure.value.code == "agent_response_too_large"
    assert len(produced) < 10


@pytest.mark.parametrize(
    ("card", "version"),
    [
        ({"protocolVersion": "0.3.0", "url": "http://a/"}, "0.3"),
        ({"supportedInterfaces": [{"protocolBinding": "JSONRPC", "protocolVersion": "0.3"}]},
         "0.3"),
        ({"supportedInterfaces": [{"protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                                  {"protocolBinding": "JSONRPC", "protocolVersion": "0.3"}]},
         "1.0"),
        ({"supportedInterfaces": [{"protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]},
         "1.0"),
        ({"name": "no versions at all"}, "1.0"),
        ("not a card", "1.0"),
    ],
)
def test_version_from_card(card: Any, version: str) -> None:
    assert version_from_card(card) == version


async def test_agent_card_is_fetched_once_per_origin_and_decides_the_version() -> None:
    card_fetches: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/.well-known/agent-card.json":
            card_fetches.append(str(req.url))
            return httpx.Response(200, json={"protocolVersion": "0.3.0"})
        return rpc_result(req, {"kind": "message", "parts": [{"kind": "text", "text": "ok"}]})

    a2a = client(handler)
    agent = Agent("a", "http://agent.test/deep/path")
    replies = [await a2a.send(request(agent)) for _ in range(3)]
    assert card_fetches == ["http://agent.test/.well-known/agent-card.json"]
    assert {r.a2a_version for r in replies} == {"0.3"}


async def test_unreachable_card_falls_back_to_v1() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("agent-card.json"):
            return httpx.Response(404)
        return rpc_result(req, {"message": {"parts": [{"text": "ok"}]}})

    reply = await client(handler).send(request(Agent("a", "http://agent.test/")))
    assert reply.a2a_version == "1.0"


class GatedTransport(httpx.AsyncBaseTransport):
    """Holds every request until the test opens the gate; counts how many it holds at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.held = 0
        self.most_held = 0
        self.order: list[str] = []

    async def handle_async_request(self, req: httpx.Request) -> httpx.Response:
        self.order.append(json.loads(req.content)["params"]["message"]["messageId"])
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        await self.gate.wait()
        self.held -= 1
        return rpc_result(req, {"message": {"role": "ROLE_AGENT", "parts": [{"text": "ok"}]}})


async def test_a_burst_beyond_the_pool_waits_in_the_client_in_arrival_order() -> None:
    # httpcore's own queue rescans every waiting request on each start and end of one: a burst
    # of a few hundred steps spent most of its CPU there. The client keeps the excess itself.
    transport = GatedTransport()
    agents = A2AClient(timeout_seconds=5.0, transport=transport, max_connections=3)
    sends = [asyncio.create_task(agents.send(request(message_id=f"m-{i}"))) for i in range(10)]
    for _ in range(50):  # every send had its chance to reach the transport
        await asyncio.sleep(0)
    assert transport.held == 3
    transport.gate.set()
    await asyncio.gather(*sends)
    assert transport.most_held == 3
    assert transport.order == [f"m-{i}" for i in range(10)]
