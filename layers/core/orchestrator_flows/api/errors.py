"""The one place where errors become HTTP: the domain's refusals, an unavailable store, invalid
requests, unknown routes and methods, and anything unexpected (DESIGN §2)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator_flows.api.models import error_body
from orchestrator_flows.errors import (
    AccountMismatch,
    ArchiveOff,
    ArchiveUnavailable,
    IdempotencyKeyReused,
    IntentNotAllowed,
    InvalidCursor,
    RequestRefused,
    SessionComplete,
    SessionEnded,
    SessionEscalated,
    SessionNotFound,
    StepInProgress,
    StepLimitReached,
    StoreUnavailable,
    TrailConflict,
)

logger = logging.getLogger(__name__)

STATUS_OF: dict[type[RequestRefused], int] = {
    IdempotencyKeyReused: 422,
    IntentNotAllowed: 409,
    SessionComplete: 409,
    SessionEscalated: 409,
    SessionEnded: 409,
    StepInProgress: 409,
    StepLimitReached: 409,
    AccountMismatch: 403,
    SessionNotFound: 404,
    InvalidCursor: 422,
    TrailConflict: 409,
    ArchiveOff: 501,
}
# Refusals counted in the StepsRejected metric: refused turns only, not reads of unknown calls.
COUNTED_PATH = "/orchestrate"


def count_refusal(app: Any, path: str, code: str) -> None:
    if path == COUNTED_PATH:
        app.state.runtime.observer.turn_refused(code)


async def refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestRefused)
    count_refusal(request.app, request.url.path, exc.code)
    headers = None
    if isinstance(exc, StepInProgress):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    return JSONResponse(error_body(exc.code, exc.message, **exc.details),
                        status_code=STATUS_OF.get(type(exc), 422), headers=headers)


async def unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreUnavailable)
    logger.error("store unavailable: %s", exc)
    count_refusal(request.app, request.url.path, exc.code)
    return JSONResponse(error_body(exc.code, "the session store is unavailable; retry shortly"),
                        status_code=503, headers={"Retry-After": "1"})


async def archive_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ArchiveUnavailable)
    logger.error("archive unavailable: %s", exc)
    return JSONResponse(error_body(exc.code, "the archive is unavailable (nothing of the "
                                   "request was lost: a call to be ended is left as it was, "
                                   "an erasure goes on where it stopped); retry shortly"),
                        status_code=503, headers={"Retry-After": "5"})


async def invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    count_refusal(request.app, request.url.path, "invalid_request")
    # Echo where and why, never the input itself (it may carry what a caller said).
    problems = [
        {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
    message = f"invalid request: {summary}"
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and media != "application/json":
        # FastAPI reads a body of another media type as no body at all: say what is expected.
        sent = f"content-type {media!r}" if media else "no content-type"
        message = (f"invalid request: the body must be JSON sent with content-type "
                   f"application/json ({sent} was sent); {summary}")
    return JSONResponse(error_body("invalid_request", message, problems=problems),
                        status_code=422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's own 400: a body it could not decode (not UTF-8, say) — an invalid
        # request like any other, per the contract.
        count_refusal(request.app, request.url.path, "invalid_request")
        return JSONResponse(
            error_body("invalid_request", f"invalid request: body: {exc.detail}",
                       problems=[{"field": "body", "problem": str(exc.detail)}]),
            status_code=422,
        )
    code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                   "http_error")
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names only the first matching route's methods; a path may have several.
        headers = {**(headers or {}), "Allow": ", ".join(_methods_of(request))}
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                        headers=headers)


async def unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "an unexpected error occurred"), 500)


def _methods_of(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestRefused, refused)
    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(ArchiveUnavailable, archive_unavailable)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
