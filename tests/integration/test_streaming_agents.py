"""Streaming agents: a2a-sdk servers whose cards say they stream, called with
SendStreamingMessage (1.0) or message/stream (0.3) and read as Server-Sent Events, reduced to the
same answer as a buffered call. Agents that stall, drop the connection or end the stream early
give the step error agent_stream_broken, with what had arrived recorded, masked."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator_flows.a2a import A2AClient, AgentRequest
from orchestrator_flows.api import create_app
from orchestrator_flows.errors import AgentFailure
from orchestrator_flows.flow import A2AVersion, Agent, RetryPolicy, StreamPolicy
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.agents import ChunkedExecutor, DropAfter, Recorder, build_agent_app
from tests.support.scripted import body

Serve = Callable[[Callable[[str], Any]], Any]
VERSIONS: list[A2AVersion] = ["1.0", "0.3"]
CARD = "4111 1111 1111 1111"  # a card number, which the step must never hold


async def recorded(serve: Serve, name: str, version: A2AVersion, *, streaming: bool = True,
                   executor: Any = None, drop_after: int | None = None) -> tuple[str, Recorder]:
    front: dict[str, Recorder] = {}

    def make(url: str) -> Any:
        app = build_agent_app(name, url, protocol_versions=(version,), streaming=streaming,
                              executor=executor)
        front["r"] = Recorder(app if drop_after is None else DropAfter(app, drop_after))
        return front["r"]

    url = await serve(make)
    return url, front["r"]


def request(url: str, *, idle: float = 5.0, attempts: int = 3, text: str = "hello",
            task_id: str | None = None) -> AgentRequest:
    agent = Agent("agent", url, retry=RetryPolicy(attempts=attempts, base_delay_seconds=0.01),
                  stream=StreamPolicy(idle_seconds=idle))
    return AgentRequest(agent=agent, text=text, task_id=task_id, context_id="ctx-call-1",
                        metadata={"call_identify_id": "CALL-1", "intent": "x"})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["billing", "greeting", "auth"])
async def test_a_streamed_answer_is_the_buffered_answer(
    serve: Serve, version: A2AVersion, name: str
) -> None:
    """The same agent, streaming and not: the same text, data and state (a task completed with
    an artifact, a plain message, a task waiting for input)."""
    streamed_url, streamed = await recorded(serve, name, version)
    buffered_url, buffered = await recorded(serve, name, version, streaming=False)
    client = A2AClient(timeout_seconds=5)
    via_stream = await client.send(request(streamed_url))
    via_buffer = await client.send(request(buffered_url))
    assert streamed.requests[0]["json"]["method"] == (
        "SendStreamingMessage" if version == "1.0" else "message/stream")
    assert streamed.requests[0]["headers"]["accept"] == "text/event-stream"
    assert buffered.requests[0]["json"]["method"] == (
        "SendMessage" if version == "1.0" else "message/send")
    assert (via_stream.text, via_stream.data, via_stream.state, via_stream.a2a_version) == (
        via_buffer.text, via_buffer.data, via_buffer.state, via_buffer.a2a_version)
    assert via_stream.text
    assert (via_stream.task_id is None) == (name == "greeting")
    assert via_stream.context_id == "ctx-call-1"
    for url, reply in ((streamed_url, via_stream), (buffered_url, via_buffer)):
        if not reply.completed:  # the agent's task is not left waiting after the test
            await client.send(request(url, text="code 123456", task_id=reply.task_id))


@pytest.mark.parametrize("version", VERSIONS)
async def test_chunks_appended_to_an_artifact_are_one_answer(
    serve: Serve, version: A2AVersion
) -> None:
    """Each chunk is a part of the one artifact, as the agent's task holds it when asked
    without a stream: the same answer."""
    chunks = ["Your balance ", "is 42.10 ", "dollars."]
    streamed_url, _ = await recorded(serve, "chunked", version, executor=ChunkedExecutor(
        chunks, data={"due": 42.1}))
    buffered_url, _ = await recorded(serve, "chunked", version, streaming=False,
                                     executor=ChunkedExecutor(chunks, data={"due": 42.1}))
    client = A2AClient(timeout_seconds=5)
    reply = await client.send(request(streamed_url))
    assert (reply.state, reply.text, reply.data) == ("completed", "\n".join(chunks), {"due": 42.1})
    buffered = await client.send(request(buffered_url))
    assert (buffered.state, buffered.text, buffered.data) == (reply.state, reply.text, reply.data)


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_open_task_continues_over_the_stream(serve: Serve, version: A2AVersion) -> None:
    url, agent = await recorded(serve, "auth", version)
    client = A2AClient(timeout_seconds=5)
    asked = await client.send(request(url))
    assert asked.state == "input-required"
    done = await client.send(request(url, text="the code is 123456", task_id=asked.task_id))
    assert (done.state, done.task_id) == ("completed", asked.task_id)
    assert agent.requests[1]["json"]["params"]["message"]["taskId"] == asked.task_id


async def test_a_stream_that_stalls_is_broken_after_the_idle_time_with_what_arrived(
    serve: Serve,
) -> None:
    executor = ChunkedExecutor(["never sent"], first_word=f"Checking card {CARD}.", stall=30)
    url, agent = await recorded(serve, "chunked", "1.0", executor=executor)
    started = time.monotonic()
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=10).send(request(url, idle=0.5))
    waited = time.monotonic() - started
    await executor.release()
    assert failure.value.code == "agent_stream_broken"
    assert "nothing came for 0.5 s" in failure.value.message
    assert failure.value.arrived == (f"Checking card {CARD}.", {})
    assert failure.value.detail["task_state"] == "working"
    assert failure.value.detail["task_id"]
    assert 0.5 <= waited < 5  # the idle time, not the step's deadline
    assert len(agent.requests) == 1  # the agent has the message: not sent again
    assert [a.outcome for a in failure.value.attempts] == ["agent_stream_broken"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_stream_dropped_mid_way_is_broken_and_not_sent_again(
    serve: Serve, version: A2AVersion
) -> None:
    executor = ChunkedExecutor(["first part, ", "second part"], pause=0.05)
    # The task and the working status (one chunk each), then the connection is dropped.
    url, agent = await recorded(serve, "chunked", version, executor=executor, drop_after=2)
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(url))
    await executor.release(stop=False)
    assert failure.value.code == "agent_stream_broken"
    assert "the connection broke" in failure.value.message
    assert failure.value.arrived[0] == "Let me check that for you."
    assert len(agent.requests) == 1


async def test_a_stream_that_ends_before_the_task_is_broken(serve: Serve) -> None:
    executor = ChunkedExecutor(["half an answer"], finish=False)
    url, _ = await recorded(serve, "chunked", "1.0", executor=executor)
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(url))
    assert failure.value.code == "agent_stream_broken"
    assert "ended before the task did" in failure.value.message
    assert failure.value.arrived[0] == "Let me check that for you.\nhalf an answer"
    # The agent's task is still working: canceled, so that nothing of it outlives the test.
    async with httpx.AsyncClient() as agent:
        canceled = await agent.post(url, headers={"A2A-Version": "1.0"}, json={
            "jsonrpc": "2.0", "id": "cancel", "method": "CancelTask",
            "params": {"id": failure.value.detail["task_id"]}})
    assert canceled.json()["result"]["status"]["state"] == "TASK_STATE_CANCELED"


async def test_a_stream_still_going_at_the_step_deadline_is_broken_with_what_arrived(
    serve: Serve,
) -> None:
    executor = ChunkedExecutor([f"part {i} " for i in range(100)], pause=0.1)
    url, _ = await recorded(serve, "chunked", "1.0", executor=executor)
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=1).send(request(url, idle=5))
    await executor.release()
    assert failure.value.code == "agent_stream_broken"
    assert "deadline of 1 s passed" in failure.value.message
    assert failure.value.arrived[0].startswith("Let me check that for you.\npart 0 \npart 1 ")


async def test_an_agent_whose_flow_entry_turns_streaming_off_gets_send_message(
    serve: Serve,
) -> None:
    url, agent = await recorded(serve, "billing", "1.0")
    plain = Agent("agent", url, stream=StreamPolicy(enabled=False))
    reply = await A2AClient(timeout_seconds=5).send(AgentRequest(
        agent=plain, text="hi", metadata={}, context_id="ctx-1"))
    assert reply.completed
    assert agent.requests[0]["json"]["method"] == "SendMessage"


FLOW = """
agents:
  greeting: {{url: "{url}"}}
  chunked: {{url: "{url}", streaming: {{idle_seconds: 0.5}}}}
fallback_agent: greeting
stages:
  - {{id: 1, name: GREETING, intents: {{greeting: chunked}}}}
  - {{id: 2, name: CLOSING, intents: {{end_call: greeting}}}}
"""


@pytest.fixture
async def stalled_api(serve: Serve, redis_url: str, tmp_path: Path
                      ) -> AsyncIterator[httpx.AsyncClient]:
    executor = ChunkedExecutor(["never sent"], first_word=f"Checking card {CARD}.", stall=30)
    url, _ = await recorded(serve, "chunked", "1.0", executor=executor)
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW.format(url=url))
    runtime = Runtime.build(Settings(redis_url=redis_url, orchestrator_config=flow,
                                     agent_timeout_seconds=10))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)),
                                 base_url="http://api") as api:
        yield api
    await runtime.aclose()
    await executor.release()


async def test_a_broken_stream_is_a_step_error_recorded_masked(
    stalled_api: httpx.AsyncClient,
) -> None:
    answer = await stalled_api.post("/orchestrate", json=body("greeting", call="STREAM-1"))
    steps = (await stalled_api.get("/session/STREAM-1/steps")).json()["steps"]
    assert answer.status_code == 200
    payload = answer.json()
    assert (payload["status"], payload["next_flow_id"]) == ("error", 1)
    assert payload["response"]["error"]["code"] == "agent_stream_broken"
    (step,) = steps
    assert step["response_status"] == "error"
    assert step["response_data"]["text"].startswith("Checking card ")
    assert CARD not in answer.text
    assert CARD not in str(steps)
    assert step["response_data"]["error"]["task_state"] == "working"
