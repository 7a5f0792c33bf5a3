"""The A2A client against real agents: a2a-sdk servers speaking 1.0 and 0.3, slow, failing and
garbage-answering ones, each on its own loopback port."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator_flows.a2a import A2AClient, AgentRequest
from orchestrator_flows.errors import AgentFailure
from orchestrator_flows.flow import A2AVersion, Agent
from tests.support import agents as test_agents
from tests.support.agents import EndingExecutor, Recorder, SlowExecutor, build_agent_app

Serve = Callable[[Callable[[str], Any]], Any]


def request(url: str, *, version: A2AVersion | None = None, text: str = "hello",
            task_id: str | None = None, context_id: str = "ctx-call-1") -> AgentRequest:
    return AgentRequest(
        agent=Agent("agent", url, version), text=text,
        metadata={"call_identify_id": "CALL-1", "intent": "refund_request", "intent_flow_id": 3},
        context_id=context_id, task_id=task_id,
    )


async def test_v1_agent_completes_with_text_and_data(serve: Serve) -> None:
    url = await serve(lambda url: build_agent_app("refund", url))
    reply = await A2AClient(timeout_seconds=5).send(request(url))
    assert (reply.state, reply.a2a_version) == ("completed", "1.0")
    assert "refund" in reply.text
    assert reply.data["refund_id"].startswith("RF-")
    assert reply.data["call_identify_id"] == "CALL-1"  # the agent saw our metadata


async def test_the_wire_carries_send_message_version_header_and_context(serve: Serve) -> None:
    recorder: dict[str, Recorder] = {}

    def make(url: str) -> Recorder:
        recorder["r"] = Recorder(build_agent_app("billing", url))
        return recorder["r"]

    url = await serve(make)
    await A2AClient(timeout_seconds=5).send(request(url, version="1.0"))
    (seen,) = recorder["r"].requests
    assert seen["headers"]["a2a-version"] == "1.0"
    assert seen["json"]["method"] == "SendMessage"
    message = seen["json"]["params"]["message"]
    assert (message["role"], message["contextId"]) == ("ROLE_USER", "ctx-call-1")
    assert message["metadata"]["intent"] == "refund_request"


async def test_agent_honours_the_calls_context_id(serve: Serve) -> None:
    url = await serve(lambda url: build_agent_app("booking", url))
    reply = await A2AClient(timeout_seconds=5).send(request(url, context_id="ctx-stable"))
    assert reply.context_id == "ctx-stable"


async def test_greeting_answers_a_plain_message(serve: Serve) -> None:
    url = await serve(lambda url: build_agent_app("greeting", url))
    reply = await A2AClient(timeout_seconds=5).send(request(url))
    assert (reply.state, reply.task_id) == ("completed", None)
    assert reply.data["greeted"] is True


@pytest.mark.parametrize("version", ["1.0", "0.3"])
async def test_input_required_task_is_continued_on_the_same_task(
    serve: Serve, version: A2AVersion
) -> None:
    url = await serve(lambda url: build_agent_app("auth", url))
    client = A2AClient(timeout_seconds=5)
    first = await client.send(request(url, version=version, text="it's me"))
    assert first.state == "input-required"
    assert first.task_id
    second = await client.send(request(url, version=version, text="code 482913",
                                       task_id=first.task_id,
                                       context_id=first.context_id or "ctx-call-1"))
    assert (second.state, second.task_id, second.a2a_version) == (
        "completed", first.task_id, version)
    assert second.data["authenticated"] is True


async def test_agent_advertising_only_0_3_is_spoken_to_in_0_3(serve: Serve) -> None:
    recorder: dict[str, Recorder] = {}

    def make(url: str) -> Recorder:
        recorder["r"] = Recorder(build_agent_app("closing", url, protocol_versions=("0.3",)))
        return recorder["r"]

    url = await serve(make)
    reply = await A2AClient(timeout_seconds=5).send(request(url))
    assert (reply.state, reply.a2a_version) == ("completed", "0.3")
    assert recorder["r"].requests[0]["json"]["method"] == "message/send"


async def test_agent_advertising_1_0_and_0_3_is_spoken_to_in_1_0(serve: Serve) -> None:
    url = await serve(lambda url: build_agent_app("closing", url, protocol_versions=("1.0",
                                                                                     "0.3")))
    assert (await A2AClient(timeout_seconds=5).send(request(url))).a2a_version == "1.0"


async def test_pinned_0_3_agent_is_answered_through_the_sdk_compat_layer(serve: Serve) -> None:
    url = await serve(lambda url: build_agent_app("balance", url))
    reply = await A2AClient(timeout_seconds=5).send(request(url, version="0.3"))
    assert (reply.state, reply.a2a_version) == ("completed", "0.3")
    assert reply.data["currency"] == "USD"


@pytest.mark.parametrize("state", ["failed", "rejected", "canceled"])
async def test_task_ending_unsuccessfully_is_a_failure(serve: Serve, state: str) -> None:
    url = await serve(lambda url: build_agent_app("x", url, executor=EndingExecutor(state)))
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(url))
    assert failure.value.code == f"agent_task_{state}"


async def test_slow_agent_times_out_at_the_deadline(serve: Serve) -> None:
    url = await serve(lambda url: build_agent_app("slow", url, executor=SlowExecutor("x", 5)))
    started = time.monotonic()
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=0.5).send(request(url))
    assert failure.value.code == "agent_timeout"
    assert time.monotonic() - started < 2  # the deadline holds, not the agent's pace


async def test_hanging_server_times_out(serve: Serve) -> None:
    url = await serve(lambda url: test_agents.raw_agent(test_agents.hang))
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=0.5).send(request(url, version="1.0"))
    assert failure.value.code == "agent_timeout"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (test_agents.garbage, "agent_bad_response"),
        (test_agents.wrong_shape, "agent_bad_response"),
        (test_agents.rpc_error, "agent_rpc_error"),
        (test_agents.http_status(500), "agent_http_error"),
        (test_agents.http_status(503), "agent_http_error"),
        (test_agents.huge, "agent_response_too_large"),
        (test_agents.huge_chunked, "agent_response_too_large"),
    ],
    ids=["garbage", "wrong-shape", "rpc-error", "http-500", "http-503", "2-MiB",
         "2-MiB-chunked"],
)
async def test_misbehaving_agent_is_a_classified_failure(
    serve: Serve, answer: Any, code: str
) -> None:
    url = await serve(lambda url: test_agents.raw_agent(answer))
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(url))
    assert failure.value.code == code


async def test_closed_port_is_unreachable() -> None:
    from tests.support.redis_servers import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=2).send(request(url, version="1.0"))
    assert failure.value.code == "agent_unreachable"
    assert f"could not be reached at {url}" in failure.value.message  # where it looked


async def test_card_is_fetched_once_per_process(serve: Serve) -> None:
    recorder: dict[str, Any] = {"gets": 0}

    def make(url: str) -> Any:
        app = build_agent_app("account", url)

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "GET":
                recorder["gets"] += 1
            await app(scope, receive, send)

        return counting

    url = await serve(make)
    client = A2AClient(timeout_seconds=5)
    for _ in range(3):
        await client.send(request(url))
    assert recorder["gets"] == 1
