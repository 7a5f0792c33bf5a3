"""The routes (DESIGN §2): one table of what each route is, and how each is added to an app. The
Lambda functions serve some of them each (`FUNCTIONS`); `tests/infra` checks that the stack
routes exactly these to each function."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from orchestrator_flows.api.models import ID_PATTERN, ErrorResponse, TurnRequest
from orchestrator_flows.queries import (
    end_session,
    erase_account,
    get_session,
    get_steps,
    list_calls,
)
from orchestrator_flows.records import (
    CallsPage,
    ErasureReceipt,
    SessionState,
    StepsResponse,
    TurnResponse,
    dump_json,
)

RouteName = Literal["orchestrate", "get_session", "get_steps", "delete_session", "list_calls",
                    "erase_account", "healthz", "readyz"]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str


ROUTES: dict[RouteName, RouteSpec] = {
    "orchestrate": RouteSpec("POST", "/orchestrate"),
    "get_session": RouteSpec("GET", "/session/{call_identify_id}"),
    "get_steps": RouteSpec("GET", "/session/{call_identify_id}/steps"),
    "delete_session": RouteSpec("DELETE", "/session/{call_identify_id}"),
    "list_calls": RouteSpec("GET", "/accounts/{account_id}/calls"),
    "erase_account": RouteSpec("DELETE", "/accounts/{account_id}/data"),
    "healthz": RouteSpec("GET", "/healthz"),
    "readyz": RouteSpec("GET", "/readyz"),
}
ALL_ROUTES: tuple[RouteName, ...] = tuple(ROUTES)
# Each Lambda function (a folder of functions/) and the routes its app serves.
FUNCTIONS: dict[str, tuple[RouteName, ...]] = {
    "orchestrate": ("orchestrate",),
    "get_session": ("get_session", "healthz", "readyz"),
    "get_steps": ("get_steps",),
    "delete_session": ("delete_session",),
    "list_calls": ("list_calls",),
    "erase_account": ("erase_account",),
}

CallId = Annotated[str, Path(pattern=ID_PATTERN, description="the call's id")]
AccountId = Annotated[str, Path(pattern=ID_PATTERN, description="the account's id")]
PageSize = Annotated[int, Query(ge=1, le=100, description="calls per page")]
Cursor = Annotated[str | None, Query(max_length=2048, description="the next_cursor of the "
                                     "previous page")]
# 1-128 printable ASCII characters, no space at either end (HTTP would strip it anyway).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    "description": "Makes the turn safe to retry: a repeat with the same key and body gets the "
    "first answer again, with no second agent call and no second step.",
}


def idempotency_key(request: Request) -> str | None:
    """The turn's Idempotency-Key, checked against its pattern. Read here rather than declared
    as a FastAPI header parameter: resolving that parameter cost about a third of the API's own
    CPU per turn (bench/RESULTS.md). The OpenAPI documents it all the same."""
    key = request.headers.get("idempotency-key")
    if key is None or _IDEMPOTENCY_KEY.fullmatch(key):
        return key
    raise RequestValidationError([{
        "type": "string_pattern_mismatch", "loc": ("header", "Idempotency-Key"),
        "msg": f"String should match pattern '{IDEMPOTENCY_KEY_PATTERN}'"}])


def _doc(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": description}}


COMMON_ERRORS = {
    **_doc(422, "invalid_request: a missing or ill-typed field, or an id not matching "
           + ID_PATTERN),
    **_doc(503, "store_unavailable: the session store cannot be reached; retry later"),
}


def _answers(kind: type[Any], description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 answering with a record, documented by the record's own schema (added to the
    OpenAPI's components by `app.py`): FastAPI builds no response model at a cold start."""
    schema = {"$ref": f"#/components/schemas/{kind.__name__}"}
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _json(record: Any) -> Response:
    """A record as its response model serialises it (the schema the OpenAPI documents)."""
    return Response(dump_json(record), media_type="application/json")


def add_orchestrate(app: FastAPI) -> None:
    from orchestrator_flows.engine import Turn


    @app.post(
        ROUTES["orchestrate"].path,
        response_model=None,
        summary="Handle one turn of a call",
        openapi_extra={"parameters": [IDEMPOTENCY_KEY_PARAMETER]},
        responses={
            **_answers(TurnResponse, "the turn's answer: where the call goes next"),
            **COMMON_ERRORS,
            **_doc(409, "intent_not_allowed (with current_flow_id, allowed_intents), "
                   "session_complete, session_escalated (the call was handed to a person; "
                   "with queue and reason), session_ended (the call was deleted), "
                   "step_in_progress (with Retry-After: when the running turn is likely "
                   "done) or step_limit_reached (with max_steps)"),
            **_doc(403, "account_mismatch: the call belongs to another account"),
            **_doc(413, "payload_too_large: body over 64 KiB"),
            **_doc(408, "request_timeout: the body took over 10 s to arrive"),
            **_doc(422, "invalid_request: a missing or ill-typed field, an id not matching "
                   + ID_PATTERN + " or a malformed Idempotency-Key; idempotency_key_reused: "
                   "the key already answered a different turn of the call"),
        },
    )
    async def handle(request: Request, body: TurnRequest) -> Response:
        key = idempotency_key(request)
        turn = Turn(body.call_identify_id, body.account_id, body.eci, body.input_message,
                    body.intent, body.locale)
        runtime = request.app.state.runtime
        answer = await runtime.turns.handle_turn_json(turn, key, turn_wait(request, runtime))
        return Response(answer, media_type="application/json")


# What a turn needs after its wait, beside the agent's deadline: two Redis scripts (1.9 s each
# at most) and the function's own work.
AFTER_WAIT_SECONDS = 4.0


def turn_wait(request: Request, runtime: Any) -> float | None:
    """How long this turn may wait for another of its call: TURN_WAIT_SECONDS (None: the
    engine's own), and in Lambda no longer than leaves the turn its agent's deadline before
    the function times out (Mangum puts the invocation's context in the scope)."""
    context = request.scope.get("aws.context")
    wait: float = runtime.turns.turn_wait_seconds
    if context is None or wait <= 0:
        return None
    left = float(context.get_remaining_time_in_millis()) / 1000
    agent: float = runtime.settings.agent_timeout_seconds
    return max(0.0, min(wait, left - agent - AFTER_WAIT_SECONDS))


def add_get_session(app: FastAPI) -> None:

    @app.get(
        ROUTES["get_session"].path,
        response_model=None,
        summary="The call's session state (from the archive once Redis no longer holds it)",
        responses={**_answers(SessionState, "the call's state and its trail"),
                   **COMMON_ERRORS, **_doc(404, "session_not_found")},
    )
    async def read_session(request: Request, call_identify_id: CallId) -> Response:
        runtime = request.app.state.runtime
        return _json(await get_session(runtime.store, call_identify_id, runtime.archives.get()))


def add_get_steps(app: FastAPI) -> None:

    @app.get(
        ROUTES["get_steps"].path,
        response_model=None,
        summary="The call's audit trail, oldest first (from the archive once Redis no longer "
        "holds it)",
        responses={**_answers(StepsResponse, "the call's steps, oldest first"),
                   **COMMON_ERRORS, **_doc(404, "session_not_found")},
    )
    async def read_steps(request: Request, call_identify_id: CallId) -> Response:
        runtime = request.app.state.runtime
        return _json(await get_steps(runtime.store, call_identify_id, runtime.archives.get()))


def add_delete_session(app: FastAPI) -> None:

    @app.delete(
        ROUTES["delete_session"].path,
        status_code=204,
        summary="End the call: remove every key of it (a marker stays for the session TTL "
        "so that a late turn cannot start it again)",
        responses={**COMMON_ERRORS, **_doc(404, "session_not_found"),
                   **_doc(409, "step_in_progress (with an archive: a turn of the call is in "
                          "flight; retry after Retry-After), or archive_conflict: the archive "
                          "holds another trail under the call's id"),
                   **_doc(503, "store_unavailable, or archive_unavailable: the call could not "
                          "be archived and was left as it was")},
    )
    async def delete(request: Request, call_identify_id: CallId) -> Response:
        runtime = request.app.state.runtime
        await end_session(runtime.store, call_identify_id, runtime.archives.get())
        return Response(status_code=204)


ARCHIVE_OFF = _doc(501, "archive_off: this deployment keeps no archive (ARCHIVE_TABLE unset)")


def add_list_calls(app: FastAPI) -> None:

    @app.get(
        ROUTES["list_calls"].path,
        response_model=None,
        summary="An account's archived calls, newest first, by page (a call is listed once "
        "archived: complete, ended, or idle for ARCHIVE_IDLE_SECONDS)",
        responses={**_answers(CallsPage, "one page of the account's calls"),
                   **COMMON_ERRORS, **ARCHIVE_OFF,
                   **_doc(422, "invalid_request (a limit outside 1-100), or invalid_cursor: a "
                          "cursor this route did not give"),
                   **_doc(503, "archive_unavailable: the archive cannot be read; retry")},
    )
    async def calls(request: Request, account_id: AccountId, limit: PageSize = 20,
                    cursor: Cursor = None) -> Response:
        return _json(await list_calls(request.app.state.runtime.archives.get(), account_id,
                                      limit, cursor))


def add_erase_account(app: FastAPI) -> None:

    @app.delete(
        ROUTES["erase_account"].path,
        response_model=None,
        summary="Erase every call of the account, in Redis and in the archive (each replaced "
        "by a tombstone keeping only ids, hashes and times), a batch per request: 202 while "
        "calls are left (repeat the request), 200 once none is. The one route that removes "
        "archived data: grant it only to the data-protection role.",
        responses={**_answers(ErasureReceipt, "complete: the account holds nothing more"),
                   202: {"description": "in_progress: a batch was erased; repeat the request",
                         "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/ErasureReceipt"}}}},
                   **COMMON_ERRORS, **ARCHIVE_OFF,
                   **_doc(503, "store_unavailable or archive_unavailable: what was erased "
                          "stays erased; repeat the request to go on")},
    )
    async def erase(request: Request, account_id: AccountId) -> Response:
        runtime = request.app.state.runtime
        receipt = await erase_account(runtime.store, runtime.archives.get(), account_id)
        return Response(dump_json(receipt), media_type="application/json",
                        status_code=200 if receipt.status == "complete" else 202)


def add_healthz(app: FastAPI) -> None:

    @app.get(ROUTES["healthz"].path, summary="Liveness: the process answers (no I/O)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}


def add_readyz(app: FastAPI) -> None:

    @app.get(
        ROUTES["readyz"].path,
        summary="Readiness: the session store answers (one PING)",
        responses={503: {"model": ErrorResponse,
                         "description": "store_unavailable: the session store does not answer"}},
    )
    async def readyz(request: Request) -> dict[str, str]:
        store = request.app.state.runtime.store
        await store.ping()
        return {"status": "ready", "store": store.backend.name}


ADD_ROUTE: dict[RouteName, Callable[[FastAPI], None]] = {
    "orchestrate": add_orchestrate,
    "get_session": add_get_session,
    "get_steps": add_get_steps,
    "delete_session": add_delete_session,
    "list_calls": add_list_calls,
    "erase_account": add_erase_account,
    "healthz": add_healthz,
    "readyz": add_readyz,
}
