"""A fast A2A agent for measuring the orchestrator's own cost: raw asyncio and httptools, about
0.1 ms of CPU a request, so that what a step costs is what the caller does.

    python bench/stub_agent.py PORT

Answers any POST with a JSON-RPC `SendMessage` (A2A 1.0) or `message/send` (0.3) as a completed
task with one text part; any GET with a small agent card. One process serves every agent URL
(the path's last segment names the agent in the answer). Keep-alive, no TLS.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any

import httptools

_TASKS = itertools.count(1)
CARD = json.dumps({"name": "stub", "protocolVersion": "1.0", "capabilities": {},
                   "supportedInterfaces": [{"protocolVersion": "1.0"}]}).encode()


def answer(path: str, body: bytes) -> bytes:
    try:
        request = json.loads(body)
        method, rpc_id = request["method"], request["id"]
        message = request["params"]["message"]
        text = " ".join(p.get("text", "") for p in message["parts"] if isinstance(p, dict))
    except (ValueError, KeyError, TypeError):
        return json.dumps({"jsonrpc": "2.0", "id": None,
                           "error": {"code": -32600, "message": "Invalid Request"}}).encode()
    agent = path.rstrip("/").rsplit("/", 1)[-1] or "agent"
    reply = f"[{agent}] handled: {text[:80]}"
    task_id, context = f"task-{next(_TASKS)}", message.get("contextId", "ctx")
    if method == "message/send":  # 0.3
        result: dict[str, Any] = {
            "kind": "task", "id": task_id, "contextId": context,
            "status": {"state": "completed", "message": {
                "kind": "message", "role": "agent", "messageId": f"m-{task_id}",
                "parts": [{"kind": "text", "text": reply}]}}}
    else:
        result = {"task": {"id": task_id, "contextId": context, "status": {
            "state": "TASK_STATE_COMPLETED", "message": {
                "role": "ROLE_AGENT", "messageId": f"m-{task_id}", "parts": [{"text": reply}]}}}}
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result},
                      separators=(",", ":")).encode()


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None  # asyncio's or uvloop's transport
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        payload = CARD if method == b"GET" else answer(self.url.decode(), b"".join(self.body))
        keep = self.parser.should_keep_alive()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(payload)).encode()
            + (b"\r\n\r\n" if keep else b"\r\nconnection: close\r\n\r\n") + payload)
        if not keep:
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(sys.argv[1])))
