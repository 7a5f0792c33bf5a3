"""A streamed answer, piece by piece: the Server-Sent Events reader over any split of the bytes,
the fold of task, status, artifact and message events (both protocol versions), what a broken
stream keeps, and the client over an httpx transport that streams."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_flows.a2a import A2AClient, AgentRequest
from orchestrator_flows.a2a.streams import ServerSentEvents, StreamFold
from orchestrator_flows.errors import AgentFailure, FlowConfigError
from orchestrator_flows.flow import Agent, RetryPolicy
from orchestrator_flows.flow_file import parse_flow

STREAM = (b": a comment\r\n"
          b"event: message\r\ndata: {\"a\":\r\ndata:  1}\r\n\r\n"
          b"id: 7\ndata: second\n\n"
          b"data:third\r\r"
          b"retry: 10\n\n"  # an event without data: nothing
          b"data: unfinished")


def read(chunks: list[bytes]) -> list[bytes]:
    events = ServerSentEvents()
    return [event for chunk in chunks for event in events.feed(chunk)]


def test_events_are_read_in_every_line_ending() -> None:
    assert read([STREAM]) == [b'{"a":\n 1}', b"second", b"third"]


ENDS_IN_CR = STREAM.removesuffix(b"data: unfinished") + b"data: last\r\r"


@given(st.sampled_from([STREAM, ENDS_IN_CR]),
       st.lists(st.integers(0, len(ENDS_IN_CR)), max_size=12))
def test_events_are_the_same_however_the_bytes_are_split(stream: bytes, cuts: list[int]) -> None:
    """Even a last event ended by CR CR at the very end of the stream."""
    points = [0, *sorted(c for c in cuts if c <= len(stream)), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    expected = [b'{"a":\n 1}', b"second", b"third"] + ([b"last"] if stream == ENDS_IN_CR else [])
    assert read(chunks) == expected


def test_an_event_ended_by_cr_is_read_before_the_next_chunk_comes() -> None:
    events = ServerSentEvents()
    assert events.feed(b"data: 1\r\r") == [b"1"]
    assert events.feed(b"\ndata: 2\n\n") == [b"2"]  # that LF ended nothing more


def test_a_byte_order_mark_and_empty_events_are_no_data() -> None:
    assert read([b"\xef\xbb", b"\xbfdata: 1\n\ndata:\n\ndata: 2\n\n"]) == [b"1", b"2"]


def test_a_long_line_dripped_in_small_chunks_is_one_event() -> None:
    line = b"data: " + b"x" * 100_000 + b"\n\n"
    assert read([line[i:i + 3] for i in range(0, len(line), 3)]) == [b"x" * 100_000]


def event(result: dict[str, Any], rpc_id: str = "1") -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}).encode()


def text(value: str) -> dict[str, Any]:
    return {"text": value}


TASK = {"id": "task-1", "contextId": "ctx-1", "status": {"state": "TASK_STATE_SUBMITTED"}}
V1: list[dict[str, Any]] = [
    {"task": TASK},
    {"statusUpdate": {"taskId": "task-1", "contextId": "ctx-1", "status": {
        "state": "TASK_STATE_WORKING", "message": {"role": "ROLE_AGENT", "parts": [
            text("one moment")]}}}},
    {"artifactUpdate": {"taskId": "task-1", "artifact": {"artifactId": "a", "parts": [
        text("Your balance ")]}}},
    {"artifactUpdate": {"taskId": "task-1", "append": True, "artifact": {
        "artifactId": "a", "parts": [text("is 42."), {"data": {"due": 42}}]}}},
    {"statusUpdate": {"taskId": "task-1", "contextId": "ctx-1", "status": {
        "state": "TASK_STATE_COMPLETED"}}},
]
V03: list[dict[str, Any]] = [
    {"kind": "task", "id": "task-1", "contextId": "ctx-1", "status": {"state": "submitted"}},
    {"kind": "status-update", "taskId": "task-1", "final": False, "status": {
        "state": "working", "message": {"kind": "message", "role": "agent", "parts": [
            {"kind": "text", "text": "one moment"}]}}},
    {"kind": "artifact-update", "taskId": "task-1", "artifact": {"artifactId": "a", "parts": [
        {"kind": "text", "text": "Your balance "}]}},
    {"kind": "artifact-update", "taskId": "task-1", "append": True, "artifact": {
        "artifactId": "a", "parts": [{"kind": "text", "text": "is 42."},
                                     {"kind": "data", "data": {"due": 42}}]}},
    {"kind": "status-update", "taskId": "task-1", "final": True, "status": {
        "state": "completed"}},
]


@pytest.mark.parametrize(("version", "results"), [("1.0", V1), ("0.3", V03)])
def test_a_tasks_events_fold_into_its_answer(version: str, results: list[Any]) -> None:
    fold = StreamFold("1", version, "billing", 5)
    ends = [fold.add(event(result)) for result in results]
    assert ends == [False, False, False, False, True]
    reply = fold.reply()
    assert (reply.state, reply.task_id, reply.context_id) == ("completed", "task-1", "ctx-1")
    assert (reply.text, reply.data) == ("Your balance \nis 42.", {"due": 42})


@pytest.mark.parametrize(("version", "results"), [("1.0", V1), ("0.3", V03)])
def test_a_broken_stream_keeps_what_had_arrived(version: str, results: list[Any]) -> None:
    fold = StreamFold("1", version, "billing", 5)
    for result in results[:3]:
        fold.add(event(result))
    failure = fold.broken("it ended before the task did")
    assert failure.code == "agent_stream_broken"
    assert failure.message == ("agent billing's stream broke after 3 events: it ended before "
                               "the task did")
    assert failure.arrived == ("one moment\nYour balance ", {})
    assert failure.detail == {"task_id": "task-1", "task_state": "working"}
    assert failure.code.keeps_task
    assert failure.code.trips_breaker
    assert not failure.retried


def test_many_chunks_appended_to_one_artifact_are_all_kept_in_order() -> None:
    fold = StreamFold("1", "1.0", "agent", 5)
    fold.add(event({"task": TASK}))
    for index in range(2_000):
        fold.add(event({"artifactUpdate": {"taskId": "task-1", "append": index > 0,
                                           "artifact": {"artifactId": "a", "parts": [
                                               text(str(index))]}}}))
    fold.add(event({"statusUpdate": {"taskId": "task-1", "status": {
        "state": "TASK_STATE_COMPLETED"}}}))
    assert fold.reply().text == "\n".join(str(i) for i in range(2_000))


def test_an_artifact_sent_again_without_append_replaces_the_one_with_its_id() -> None:
    fold = StreamFold("1", "1.0", "agent", 5)
    fold.add(event({"task": {**TASK, "artifacts": [{"artifactId": "a", "parts": [
        text("draft")]}]}}))
    for artifact_id, value in [("b", "kept"), ("a", "final"), (["odd"], "odd id")]:
        fold.add(event({"artifactUpdate": {"taskId": "task-1", "artifact": {
            "artifactId": artifact_id, "parts": [text(value)]}}}))
    fold.add(event({"statusUpdate": {"taskId": "task-1", "status": {
        "state": "TASK_STATE_COMPLETED"}}}))
    assert fold.reply().text == "final\nkept\nodd id"


def test_a_message_ends_the_stream_and_is_the_answer() -> None:
    fold = StreamFold("1", "1.0", "greeting", 5)
    assert fold.add(event({"message": {"role": "ROLE_AGENT", "parts": [text("Welcome")]}}))
    assert (fold.reply().text, fold.reply().state) == ("Welcome", "completed")


@pytest.mark.parametrize("state", ["TASK_STATE_INPUT_REQUIRED", "TASK_STATE_FAILED",
                                   "TASK_STATE_REJECTED", "TASK_STATE_AUTH_REQUIRED"])
def test_a_task_waiting_or_failed_ends_the_stream(state: str) -> None:
    fold = StreamFold("1", "1.0", "auth", 5)
    assert not fold.add(event({"task": TASK}))
    assert fold.add(event({"statusUpdate": {"taskId": "task-1", "status": {"state": state}}}))


def test_updates_without_a_task_first_start_one() -> None:
    fold = StreamFold("1", "1.0", "agent", 5)
    fold.add(event({"artifactUpdate": {"taskId": "t", "contextId": "c", "artifact": {
        "artifactId": "a", "parts": [text("done")]}}}))
    assert fold.add(event({"statusUpdate": {"taskId": "t", "status": {
        "state": "TASK_STATE_COMPLETED"}}}))
    assert (fold.reply().task_id, fold.reply().text) == ("t", "done")


@pytest.mark.parametrize(("data", "code"), [
    (event({"nothing": 1}), "agent_bad_response"),
    (event({"task": TASK}, rpc_id="2"), "agent_bad_response"),
    (b"[" * 10_000, "agent_bad_response"),
    (b'{"jsonrpc": "2.0", "id": "1", "error": {"code": -32001, "message": "no task"}}',
     "agent_rpc_error"),
])
def test_an_event_that_is_no_answer_fails_the_step(data: bytes, code: str) -> None:
    with pytest.raises(AgentFailure) as failure:
        StreamFold("1", "1.0", "agent", 5).add(data)
    assert failure.value.code == code


def streaming_card(streaming: bool = True) -> httpx.Response:
    return httpx.Response(200, json={"capabilities": {"streaming": streaming},
                                     "supportedInterfaces": [{"protocolVersion": "1.0"}]})


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def sse(*results: dict[str, Any], rpc_id: str) -> bytes:
    return b"".join(b"data: " + event(result, rpc_id) + b"\n\n" for result in results)


async def test_the_client_reads_a_stream_split_anywhere() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return streaming_card()
        rpc = json.loads(request.content)
        seen.append({"method": rpc["method"], "accept": request.headers["accept"],
                     "stream": request.extensions.get("stream")})
        body = sse(*V1, rpc_id=rpc["id"])
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Chunks([body[i:i + 7] for i in range(0, len(body), 7)]))

    client = A2AClient(timeout_seconds=5, transport=httpx.MockTransport(handler))
    reply = await client.send(AgentRequest(agent=Agent("billing", "http://agent/"),
                                           text="hi", metadata={}, context_id="ctx-1"))
    assert (reply.state, reply.text, reply.data) == ("completed", "Your balance \nis 42.",
                                                     {"due": 42})
    assert seen == [{"method": "SendStreamingMessage", "accept": "text/event-stream",
                     "stream": True}]


async def test_a_streaming_request_answered_with_plain_json_is_read_as_json() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return streaming_card()
        rpc = json.loads(request.content)
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rpc["id"], "error": {
            "code": -32004, "message": "streaming is not supported"}})

    client = A2AClient(timeout_seconds=5, transport=httpx.MockTransport(handler))
    with pytest.raises(AgentFailure) as failure:
        await client.send(AgentRequest(agent=Agent("billing", "http://agent/"), text="hi",
                                       metadata={}, context_id="ctx-1"))
    assert failure.value.code == "agent_rpc_error"


async def test_a_stream_over_the_cap_is_too_large() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return streaming_card()
        rpc = json.loads(request.content)
        working = {"statusUpdate": {"taskId": "task-1", "status": {
            "state": "TASK_STATE_WORKING", "message": {"parts": [text("x" * 1000)]}}}}
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Chunks([sse({"task": TASK}, rpc_id=rpc["id"])]
                                            + [sse(working, rpc_id=rpc["id"])] * 50))

    client = A2AClient(timeout_seconds=5, transport=httpx.MockTransport(handler),
                       max_body_bytes=20_000)
    with pytest.raises(AgentFailure) as failure:
        await client.send(AgentRequest(
            agent=Agent("billing", "http://agent/", retry=RetryPolicy(attempts=1)),
            text="hi", metadata={}, context_id="ctx-1"))
    assert failure.value.code == "agent_response_too_large"


def test_the_flow_file_sets_or_turns_off_streaming() -> None:
    flow = parse_flow("""
agents:
  a: {url: "http://127.0.0.1:1/", streaming: {idle_seconds: 2.5}}
  b: {url: "http://127.0.0.1:1/", streaming: {enabled: false}}
  c: {url: "http://127.0.0.1:1/"}
fallback_agent: c
stages:
  - {id: 1, name: GREETING, intents: {greeting: a, other: b}}
""", "flow.yaml")
    policies = {name: flow.agents[name].stream for name in "abc"}
    assert (policies["a"].enabled, policies["a"].idle_seconds) == (True, 2.5)
    assert (policies["b"].enabled, policies["b"].idle_seconds) == (False, 10.0)
    assert (policies["c"].enabled, policies["c"].idle_seconds) == (True, 10.0)


@pytest.mark.parametrize("spec", ["{idle_seconds: 0}", "{enabled: 'yes'}", "{idle: 3}"])
def test_a_bad_streaming_entry_is_refused_at_load(spec: str) -> None:
    with pytest.raises(FlowConfigError, match="streaming"):
        parse_flow(f"""
agents:
  a: {{url: "http://127.0.0.1:1/", streaming: {spec}}}
fallback_agent: a
stages:
  - {{id: 1, name: GREETING, intents: {{greeting: a}}}}
""", "flow.yaml")
