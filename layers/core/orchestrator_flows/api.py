"""The HTTP API (DESIGN §2) in FastAPI, and the one place where domain errors become HTTP.

`create_app(runtime, routes=…)` builds an app with all routes (local server) or only some (one
Lambda function per endpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator_flows.errors import (
    AccountMismatch,
    IdempotencyKeyReused,
    IntentNotAllowed,
    RequestRefused,
    SessionComplete,
    SessionEnded,
    SessionNotFound,
    StepInProgress,
    StepLimitReached,
    StoreUnavailable,
)
from orchestrator_flows.models import (
    ID_PATTERN,
    MAX_BODY_BYTES,
    ErrorResponse,
    SessionState,
    StepsResponse,
    TurnRequest,
    TurnResponse,
)
from orchestrator_flows.queries import end_session, get_session, get_steps
from orchestrator_flows.runtime import Runtime

logger = logging.getLogger(__name__)

Route = Literal["orchestrate", "get_session", "get_steps", "delete_session", "healthz"]
ALL_ROUTES: tuple[Route, ...] = (
    "orchestrate", "get_session", "get_steps", "delete_session", "healthz",
)
CallId = Annotated[str, Path(pattern=ID_PATTERN, description="the call's id")]

STATUS_OF: dict[type[RequestRefused], int] = {
    IdempotencyKeyReused: 422,
    IntentNotAllowed: 409,
    SessionComplete: 409,
    SessionEnded: 409,
    StepInProgress: 409,
    StepLimitReached: 409,
    AccountMismatch: 403,
    SessionNotFound: 404,
}


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


# 1-128 printable ASCII characters, no space at either end (HTTP would strip it anyway).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?$",
        description="Makes the turn safe to retry: a repeat with the same key and body gets "
        "the first answer again, with no second agent call and no second step.",
    ),
]


def _doc(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": description}}


COMMON_ERRORS = {
    **_doc(422, "invalid_request: a missing or ill-typed field, or an id not matching "
           + ID_PATTERN),
    **_doc(503, "store_unavailable: the session store cannot be reached; retry later"),
}


class BodyLimit:
    """Refuses bodies over the limit before anything parses them (413 payload_too_large)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if "app" in scope:
            _count_refusal(scope["app"], scope["path"], "payload_too_large")
        response = JSONResponse(
            error_body("payload_too_large", f"the request body is over {self.limit} bytes"),
            status_code=413,
        )
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _methods_of(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


def _count_refusal(app: Any, path: str, code: str) -> None:
    # StepsRejected counts refused turns only, not reads of unknown sessions.
    if path == "/orchestrate":
        app.state.runtime().observer.turn_refused(code)


def _install_error_mapping(app: FastAPI) -> None:
    @app.exception_handler(RequestRefused)
    async def refused(request: Request, exc: RequestRefused) -> JSONResponse:
        _count_refusal(request.app, request.url.path, exc.code)
        headers = None
        if isinstance(exc, StepInProgress):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        status = STATUS_OF.get(type(exc), 422)
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.details), status_code=status, headers=headers
        )

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        logger.error("store unavailable: %s", exc)
        _count_refusal(request.app, request.url.path, exc.code)
        return JSONResponse(
            error_body(exc.code, "the session store is unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count_refusal(request.app, request.url.path, "invalid_request")
        # Echo where and why, never the input itself (it may carry what a caller said).
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        return JSONResponse(
            error_body("invalid_request", f"invalid request: {summary}", problems=problems),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's own 400: a body it could not decode (not UTF-8, say) — an invalid
            # request like any other, per the contract.
            _count_refusal(request.app, request.url.path, "invalid_request")
            return JSONResponse(
                error_body("invalid_request", f"invalid request: body: {exc.detail}",
                           problems=[{"field": "body", "problem": str(exc.detail)}]),
                status_code=422,
            )
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path may have several.
            headers = {**(headers or {}), "Allow": ", ".join(_methods_of(request))}
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "an unexpected error occurred"), 500)


def create_app(
    runtime: Runtime | Callable[[], Runtime], routes: Collection[Route] = ALL_ROUTES
) -> FastAPI:
    """The API with the given routes. `runtime` may be a factory, called on first request, so
    that clients are created on the event loop that serves them."""
    holder: dict[str, Runtime] = {}

    def current() -> Runtime:
        if "runtime" not in holder:
            holder["runtime"] = runtime() if callable(runtime) else runtime
        return holder["runtime"]

    app = FastAPI(
        title="Orchestrator Flows",
        version="1.0.0",
        description="Routes each turn of a customer-service call to the A2A agent of its stage.",
    )
    app.state.runtime = current
    _install_error_mapping(app)

    if "orchestrate" in routes:
        from orchestrator_flows.engine import Turn

        @app.post(
            "/orchestrate",
            response_model=TurnResponse,
            summary="Handle one turn of a call",
            responses={
                **COMMON_ERRORS,
                **_doc(409, "intent_not_allowed (with current_flow_id, allowed_intents), "
                       "session_complete, session_ended (the call was deleted), "
                       "step_in_progress (with Retry-After: when the running turn is likely "
                       "done) or step_limit_reached (with max_steps)"),
                **_doc(403, "account_mismatch: the call belongs to another account"),
                **_doc(413, "payload_too_large: body over 64 KiB"),
                **_doc(422, "invalid_request: a missing or ill-typed field, an id not matching "
                       + ID_PATTERN + " or a malformed Idempotency-Key; idempotency_key_reused: "
                       "the key already answered a different turn of the call"),
            },
        )
        async def orchestrate(
            body: TurnRequest, idempotency_key: IdempotencyKey = None
        ) -> Response:
            result = await current().orchestrator.handle_turn(
                Turn(
                    body.call_identify_id,
                    body.account_id,
                    body.eci,
                    body.input_message,
                    body.intent,
                ),
                idempotency_key,
            )
            return JSONResponse(result)

    if "get_session" in routes:

        @app.get(
            "/session/{call_identify_id}",
            response_model=SessionState,
            summary="The call's session state",
            responses={**COMMON_ERRORS, **_doc(404, "session_not_found")},
        )
        async def read_session(call_identify_id: CallId) -> Response:
            return JSONResponse(await get_session(current().store, call_identify_id))

    if "get_steps" in routes:

        @app.get(
            "/session/{call_identify_id}/steps",
            response_model=StepsResponse,
            summary="The call's audit trail, oldest first",
            responses={**COMMON_ERRORS, **_doc(404, "session_not_found")},
        )
        async def read_steps(call_identify_id: CallId) -> Response:
            return JSONResponse(await get_steps(current().store, call_identify_id))

    if "delete_session" in routes:

        @app.delete(
            "/session/{call_identify_id}",
            status_code=204,
            summary="End the call: remove every key of it (a marker stays for the session TTL "
            "so that a late turn cannot start it again)",
            responses={**COMMON_ERRORS, **_doc(404, "session_not_found")},
        )
        async def delete(call_identify_id: CallId) -> Response:
            await end_session(current().store, call_identify_id)
            return Response(status_code=204)

    if "healthz" in routes:

        @app.get("/healthz", summary="Liveness")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

    app.add_middleware(BodyLimit)
    return app
