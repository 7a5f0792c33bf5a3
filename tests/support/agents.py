"""Real A2A agents for tests: the a2a-sdk demo agents with scripted behaviours, and raw
Starlette servers for answers the SDK would never produce (garbage, huge bodies, hangs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from a2a.helpers.proto_helpers import new_data_part, new_message, new_text_part
from a2a.server.agent_execution.context import RequestContext
from a2a.server.events.event_queue import EventQueue
from a2a.server.tasks.task_updater import TaskUpdater
from a2a.types import Task, TaskState, TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator_flows.local.demo_agents import DemoExecutor, build_agent_app


class SlowExecutor(DemoExecutor):
    def __init__(self, name: str, delay: float) -> None:
        super().__init__(name)
        self.delay = delay

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await asyncio.sleep(self.delay)
        await super().execute(context, event_queue)


class ClassifierExecutor(DemoExecutor):
    """A classifier agent: answers a plain message whose data is `{intent, confidence}`, the
    first of the candidates its metadata lists whose name (its words) the text holds, else
    the first candidate at a low confidence. What it was asked is kept."""

    def __init__(self) -> None:
        super().__init__("nlu")
        self.asked: list[dict[str, Any]] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        from google.protobuf import json_format

        assert context.message is not None
        meta = json_format.MessageToDict(context.message.metadata)
        self.asked.append(meta)
        text = context.get_user_input().lower()
        candidates = list(meta.get("candidates", []))
        found = next((c for c in candidates if c.split("_")[0] in text), None)
        data = ({"intent": found, "confidence": 0.93} if found else
                {"intent": candidates[0] if candidates else None, "confidence": 0.05})
        await event_queue.enqueue_event(new_message(
            [new_text_part("classified"), new_data_part(data)], context_id=context.context_id))


class EndingExecutor(DemoExecutor):
    """Ends every task in one terminal state: failed, rejected or canceled."""

    def __init__(self, state: str) -> None:
        super().__init__(f"ends-{state}")
        self.state = state

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id
        assert context.context_id
        assert context.message
        await event_queue.enqueue_event(Task(
            id=context.task_id, context_id=context.context_id,
            status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED), history=[context.message]))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        message = updater.new_agent_message([new_text_part(f"this task is {self.state}")])
        end: Callable[..., Awaitable[None]] = {
            "failed": updater.failed, "rejected": updater.reject, "canceled": updater.cancel,
        }[self.state]
        await end(message)


class ChunkedExecutor(DemoExecutor):
    """Streams its work as a streaming agent does: a working status with a first word, then
    its answer as artifact chunks appended one to the next, then (unless `finish` is False)
    completed. `pause` between events; `stall` seconds of silence after the first word."""

    def __init__(self, chunks: list[str], *, first_word: str = "Let me check that for you.",
                 pause: float = 0.0, stall: float = 0.0, finish: bool = True,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__("chunked")
        self.chunks = chunks
        self.first_word = first_word
        self.pause = pause
        self.stall = stall
        self.finish = finish
        self.data = data or {}
        self._released = asyncio.Event()
        self._running = 0
        self._idle = asyncio.Event()

    async def release(self, *, stop: bool = True) -> None:
        """Wait (5 s at most) until every execution has returned, first telling them to stop
        stalling and streaming (they then cancel their task): nothing of the agent's is left
        running, nor any task of it open, once its test is done."""
        if stop:
            self._released.set()
        if self._running:
            await asyncio.wait_for(self._idle.wait(), 5)

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        self._running += 1
        self._idle.clear()
        try:
            await self._stream(context, event_queue)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def _stream(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id
        assert context.context_id
        assert context.message
        if context.current_task is None:
            await event_queue.enqueue_event(Task(
                id=context.task_id, context_id=context.context_id,
                status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                history=[context.message]))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work(updater.new_agent_message([new_text_part(self.first_word)]))
        for index, chunk in enumerate(self.chunks):
            wait = self.stall if index == 0 else 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), wait + self.pause)
            if self._released.is_set():
                await updater.cancel()
                return
            await updater.add_artifact([new_text_part(chunk)], artifact_id="answer",
                                       name="answer", append=index > 0,
                                       last_chunk=index == len(self.chunks) - 1)
        if self.data:
            await updater.add_artifact([new_data_part(self.data)], artifact_id="data")
        if self.finish:
            await updater.complete()


@dataclass
class DropAfter:
    """ASGI middleware that breaks a streamed answer: after `chunks` chunks of its body, the
    connection is dropped mid-stream (the app fails, and the server aborts the answer)."""

    app: ASGIApp
    chunks: int

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = 0

        async def counting(message: MutableMapping[str, Any]) -> None:
            nonlocal sent
            if message["type"] == "http.response.body" and message.get("body"):
                if sent == self.chunks:
                    raise DroppedOnPurpose
                sent += 1
            await send(message)

        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, counting)
        except DroppedOnPurpose:
            raise ConnectionAbortedError("dropped mid-stream on purpose") from None


class DroppedOnPurpose(Exception):
    pass


async def read_body(receive: Receive) -> tuple[bytes, Receive]:
    """A request's whole body, and a `receive` that hands it on to the app behind."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> dict[str, Any]:
        # The body once; then what the server says (a streaming answer listens for the
        # client's disconnect, and must wait for it, not be handed the body forever).
        nonlocal replayed
        if replayed:
            return dict(await receive())
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay


@dataclass
class Recorder:
    """ASGI middleware keeping every request an agent receives (headers, JSON body). With
    `fail_first`, its first POSTs get `status` instead of reaching the agent, as a gateway that
    lost its upstream would answer."""

    app: ASGIApp
    fail_first: int = 0
    status: int = 503
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive)
        self.requests.append({
            "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            "json": json.loads(body),
        })
        if len(self.requests) <= self.fail_first:
            await Response(status_code=self.status)(scope, receive, send)
            return
        await self.app(scope, replay, send)


def raw_agent(answer: Callable[[dict[str, Any]], Awaitable[Response]]) -> Starlette:
    """A server that speaks HTTP but answers whatever `answer` makes of the JSON-RPC request."""

    async def endpoint(request: Request) -> Response:
        return await answer(json.loads(await request.body()))

    async def no_card(_: Request) -> Response:
        return Response(status_code=404)

    return Starlette(routes=[Route("/", endpoint, methods=["POST"]),
                             Route("/.well-known/agent-card.json", no_card)])


async def garbage(_: dict[str, Any]) -> Response:
    return Response(b"<html>definitely not json</html>", media_type="text/html")


async def wrong_shape(rpc: dict[str, Any]) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": rpc["id"], "result": {"foo": 1}})


async def rpc_error(rpc: dict[str, Any]) -> Response:
    return JSONResponse({"jsonrpc": "2.0", "id": rpc["id"],
                         "error": {"code": -32603, "message": "Internal error"}})


def http_status(status: int) -> Callable[[dict[str, Any]], Awaitable[Response]]:
    async def answer(_: dict[str, Any]) -> Response:
        return Response(b"upstream trouble", status_code=status)
    return answer


async def huge(rpc: dict[str, Any]) -> Response:
    padding = "x" * (2 << 20)
    return JSONResponse({"jsonrpc": "2.0", "id": rpc["id"],
                         "result": {"message": {"parts": [{"text": padding}]}}})


async def huge_chunked(rpc: dict[str, Any]) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc": "2.0", "id": "' + rpc["id"].encode() + b'", "result": {"x": "'
        for _ in range(64):
            yield b"y" * 32768
        yield b'"}}'
    return StreamingResponse(chunks(), media_type="application/json")


async def hang(_: dict[str, Any]) -> Response:
    await asyncio.sleep(3600)
    return Response()


__all__ = ["EndingExecutor", "Recorder", "SlowExecutor", "build_agent_app",
           "garbage", "hang", "http_status", "huge", "huge_chunked", "raw_agent", "rpc_error",
           "wrong_shape"]
