"""What the API bounds before anything parses a request: the body's size (413
payload_too_large) and how long it may take to arrive (408 request_timeout: a client dripping
a body byte by byte must not hold a connection and a task indefinitely), and how a JSON body is
parsed (`UntrustedJsonRoute`: however deep it nests, the depth stays with the parser)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator_flows import untrusted
from orchestrator_flows.api.models import MAX_BODY_BYTES, error_body
from orchestrator_flows.timeouts import deadline_in

BODY_SECONDS = 10.0


class BodyLimit:
    """Refuses bodies over the limit, or slower than `seconds` to arrive, before anything
    parses them; `on_refusal(scope, code)` is told of each refusal (for the StepsRejected
    metric)."""

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, seconds: float = BODY_SECONDS,
        on_refusal: Callable[[Scope, str], None] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send, 413, "payload_too_large",
                               f"the request body is over {self.limit} bytes")
            return
        try:
            async with deadline_in(self.seconds):
                chunks = await self._read(receive)
        except TimeoutError:
            await self._refuse(scope, send, 408, "request_timeout",
                               f"the request body took over {self.seconds:g} s to arrive")
            return
        if chunks is None:  # the client went away
            return
        if sum(map(len, chunks)) > self.limit:
            await self._refuse(scope, send, 413, "payload_too_large",
                               f"the request body is over {self.limit} bytes")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> list[bytes] | None:
        """The body's chunks, stopping as soon as they are over the limit; None on a
        disconnect."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= self.limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks

    async def _refuse(self, scope: Scope, send: Send, status: int, code: str,
                      message: str) -> None:
        if self.on_refusal is not None:
            self.on_refusal(scope, code)
        headers = {"connection": "close"} if status == 408 else None
        response = JSONResponse(error_body(code, message), status_code=status, headers=headers)
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class _UntrustedJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = untrusted.loads(await self.body())
        return self._json


class UntrustedJsonRoute(APIRoute):
    """A route whose JSON body FastAPI parses with `untrusted.loads`: a body nested deep enough
    to fail the parser (422 invalid_request, as before) leaves the finalizers of other garbage
    their stack. FastAPI's documented way to change the request a route's handler reads."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.body_field:
            return handler

        async def parse_untrusted(request: Request) -> Response:
            return await handler(_UntrustedJsonRequest(request.scope, request.receive))

        return parse_untrusted
