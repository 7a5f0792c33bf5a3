"""The HTTP API of DESIGN §2: every route, every row of the error table, nothing written on a
refusal. Runs the FastAPI app in process over the embedded store and scripted agents."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

from orchestrator_flows.api import create_app
from orchestrator_flows.api.limits import BodyLimit
from orchestrator_flows.errors import SettingsError, StoreUnavailable
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from orchestrator_flows.store import CallKeys, ClaimResult
from orchestrator_flows.store.memory_backend import MemoryBackend
from tests.support.collector import watched_collections
from tests.support.scripted import STAGE_INTENTS, ScriptedAgents, body


def error_of(response: httpx.Response) -> dict[str, Any]:
    payload = response.json()
    assert set(payload) == {"error"}
    assert isinstance(payload["error"]["message"], str)
    assert payload["error"]["message"]
    error: dict[str, Any] = payload["error"]
    return error


async def trail(api: httpx.AsyncClient, call: str = "CALL-1") -> list[dict[str, Any]]:
    response = await api.get(f"/session/{call}/steps")
    return list(response.json()["steps"]) if response.status_code == 200 else []


async def test_a_turn_answers_the_documented_shape(api: httpx.AsyncClient) -> None:
    response = await api.post("/orchestrate", json=body("greeting"))
    assert response.status_code == 200
    payload = response.json()
    assert set(payload) == {"call_identify_id", "intent_flow_id", "intent", "status", "response",
                            "next_flow_id", "is_complete", "session_summary", "handoff",
                            "intent_source", "confidence", "candidates", "parts"}
    assert (payload["handoff"], payload["intent_source"], payload["confidence"],
            payload["candidates"], payload["parts"]) == (None, "caller", None, [], [])
    assert (payload["call_identify_id"], payload["intent_flow_id"], payload["next_flow_id"]) == (
        "CALL-1", 1, 2)
    assert {"text", "data", "state", "task_id", "context_id"} <= set(payload["response"])


async def test_a_whole_call_completes_over_http(api: httpx.AsyncClient) -> None:
    for intent in STAGE_INTENTS:
        last = (await api.post("/orchestrate", json=body(intent))).json()
    assert last["is_complete"] is True
    assert last["session_summary"]["call_identify_id"] == "CALL-1"
    assert len(last["session_summary"]["steps"]) == 5


@pytest.mark.parametrize(
    "payload",
    [
        {k: v for k, v in body("greeting").items() if k != "eci"},
        {**body("greeting"), "account_id": 42},
        {**body("greeting"), "input_message": None},
        {**body("greeting"), "call_identify_id": "CALL 1"},
        {**body("greeting"), "call_identify_id": "x" * 129},
        {**body("greeting"), "eci": ""},
        {**body("greeting"), "intent": "{bad}"},
        ["not", "an", "object"],
    ],
    ids=["missing-field", "wrong-type", "null", "id-with-space", "id-too-long", "empty-id",
         "bad-intent", "array-body"],
)
async def test_invalid_body_is_422_and_writes_nothing(
    api: httpx.AsyncClient, backend: MemoryBackend, payload: Any
) -> None:
    response = await api.post("/orchestrate", json=payload)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["problems"]
    assert backend.keyspace.keys("") == []


async def test_invalid_json_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/orchestrate", content=b'{"call_identify_id": ', headers={"content-type":
                                                                  "application/json"}
    )
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"


@pytest.mark.parametrize("document", [b"[" * 30_000 + b"]" * 30_000,
                                      b'{"a":' * 10_000 + b"1" + b"}" * 10_000])
async def test_a_body_nested_past_the_parser_is_422_and_starves_no_finalizer(
    api: httpx.AsyncClient, backend: MemoryBackend, document: bytes
) -> None:
    with watched_collections() as seen:
        response = await api.post("/orchestrate", content=document,
                                  headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"
    assert backend.keyspace.keys("") == []
    assert seen.started > 0
    assert seen.starved == 0  # no collection started while the parser was deep


async def test_validation_errors_do_not_echo_the_input(api: httpx.AsyncClient) -> None:
    response = await api.post("/orchestrate", json={**body("greeting"), "account_id": "4111 1111"})
    assert "4111 1111" not in response.text


async def test_body_over_64_kib_is_413_before_parsing(
    api: httpx.AsyncClient, backend: MemoryBackend
) -> None:
    response = await api.post("/orchestrate", json=body("greeting", text="x" * 70_000))
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert backend.keyspace.keys("") == []


async def test_chunked_body_over_64_kib_is_413(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b" " * 1024

    response = await api.post("/orchestrate", content=chunks(),
                              headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_intent_of_another_stage_is_409_with_the_allowed_intents(
    api: httpx.AsyncClient,
) -> None:
    await api.post("/orchestrate", json=body("greeting"))
    response = await api.post("/orchestrate", json=body("process_refund"))
    assert response.status_code == 409
    error = error_of(response)
    assert (error["code"], error["current_flow_id"]) == ("intent_not_allowed", 2)
    assert error["allowed_intents"] == ["authenticate", "otp_verify", "verify_identity"]
    assert len(await trail(api)) == 1


async def test_turn_on_a_complete_call_is_409_session_complete(api: httpx.AsyncClient) -> None:
    for intent in STAGE_INTENTS:
        await api.post("/orchestrate", json=body(intent))
    response = await api.post("/orchestrate", json=body("feedback"))
    assert (response.status_code, error_of(response)["code"]) == (409, "session_complete")
    assert len(await trail(api)) == 5


async def test_concurrent_step_is_409_step_in_progress_with_retry_after(
    api: httpx.AsyncClient, agents: ScriptedAgents, runtime: Runtime
) -> None:
    runtime.turns.turn_wait_seconds = 0  # TURN_WAIT_SECONDS=0: a turn does not wait
    agents.then("greeting", 0.3)
    first = asyncio.create_task(api.post("/orchestrate", json=body("greeting")))
    await asyncio.sleep(0.1)
    response = await api.post("/orchestrate", json=body("greeting"))
    assert (response.status_code, error_of(response)["code"]) == (409, "step_in_progress")
    assert response.headers["retry-after"] == "1"  # the running turn is 0.1 s in, not 20
    assert (await first).status_code == 200


async def test_a_concurrent_step_waits_its_turn_and_is_answered(
    api: httpx.AsyncClient, agents: ScriptedAgents
) -> None:
    agents.then("greeting", 0.3)
    first = asyncio.create_task(api.post("/orchestrate", json=body("greeting")))
    await asyncio.sleep(0.1)
    second = await api.post("/orchestrate", json=body("verify_identity"))
    assert first.done()  # answered after the first, not beside it
    assert (second.status_code, second.json()["intent_flow_id"]) == (200, 2)
    assert [s["intent"] for s in await trail(api)] == ["greeting", "verify_identity"]


async def test_a_turn_waits_no_longer_than_its_wait(
    api: httpx.AsyncClient, agents: ScriptedAgents, runtime: Runtime
) -> None:
    runtime.turns.turn_wait_seconds = 0.2
    agents.then("greeting", 2.0)
    first = asyncio.create_task(api.post("/orchestrate", json=body("greeting")))
    await asyncio.sleep(0.1)
    started = asyncio.get_running_loop().time()
    second = await api.post("/orchestrate", json=body("greeting"))
    waited = asyncio.get_running_loop().time() - started
    assert (second.status_code, error_of(second)["code"]) == (409, "step_in_progress")
    assert waited >= 0.2
    assert not first.done()  # it gave up: it did not wait for the first to finish
    assert (await first).status_code == 200
    assert len(await trail(api)) == 1


async def test_other_account_is_403_account_mismatch(api: httpx.AsyncClient) -> None:
    await api.post("/orchestrate", json=body("greeting"))
    response = await api.post("/orchestrate", json=body("verify_identity", account="ACC-2"))
    assert (response.status_code, error_of(response)["code"]) == (403, "account_mismatch")
    assert len(await trail(api)) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/session/NOPE"), ("GET", "/session/NOPE/steps"), ("DELETE", "/session/NOPE")],
)
async def test_unknown_session_is_404_session_not_found(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path)
    assert (response.status_code, error_of(response)["code"]) == (404, "session_not_found")


async def test_invalid_id_in_the_path_is_422(api: httpx.AsyncClient) -> None:
    response = await api.get("/session/" + "x" * 129)
    assert (response.status_code, error_of(response)["code"]) == (422, "invalid_request")


async def test_get_session_answers_the_session_state(api: httpx.AsyncClient) -> None:
    await api.post("/orchestrate", json=body("greeting", text="hello there"))
    state = (await api.get("/session/CALL-1")).json()
    assert set(state) == {"call_identify_id", "account_id", "eci", "current_flow_id",
                          "completed_flows", "is_complete", "steps", "created_at", "updated_at",
                          "source", "handoff"}
    assert (state["current_flow_id"], state["completed_flows"], state["source"]) == (
        2, [1], "live")
    assert state["steps"][0]["input_message"] == "hello there"


async def test_steps_answers_the_trail_oldest_first(api: httpx.AsyncClient) -> None:
    for intent in ("greeting", "small_talk", "verify_identity"):
        await api.post("/orchestrate", json=body(intent))
    response = await api.get("/session/CALL-1/steps")
    assert response.json()["call_identify_id"] == "CALL-1"
    assert [s["intent"] for s in response.json()["steps"]] == [
        "greeting", "small_talk", "verify_identity"]


async def test_delete_answers_204_and_removes_every_key_but_its_ended_marker(
    api: httpx.AsyncClient, backend: MemoryBackend
) -> None:
    await api.post("/orchestrate", json=body("greeting"))
    response = await api.delete("/session/CALL-1")
    assert (response.status_code, response.content) == (204, b"")
    assert backend.keys_of("CALL-1") == ["of:{CALL-1}:ended"]
    assert (await api.get("/session/CALL-1")).status_code == 404
    assert (await api.delete("/session/CALL-1")).status_code == 404


async def test_a_deleted_call_stays_deleted_late_and_retried_turns_get_409_session_ended(
    api: httpx.AsyncClient, backend: MemoryBackend, agents: ScriptedAgents
) -> None:
    keyed = {"Idempotency-Key": "turn-1"}
    await api.post("/orchestrate", json=body("greeting"), headers=keyed)
    await api.delete("/session/CALL-1")
    late = await api.post("/orchestrate", json=body("verify_identity"))
    retried = await api.post("/orchestrate", json=body("greeting"), headers=keyed)
    for response in (late, retried):
        assert (response.status_code, error_of(response)["code"]) == (409, "session_ended")
    assert backend.keys_of("CALL-1") == ["of:{CALL-1}:ended"]  # nothing was created again
    assert len(agents.requests) == 1


class DownBackend(MemoryBackend):
    async def claim(
        self, keys: CallKeys, token: str, lease_ms: int, reply_key: str | None,
        wait_ms: int = 0,
    ) -> ClaimResult:
        raise StoreUnavailable("down")

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]:
        raise StoreUnavailable("down")

    async def ping(self) -> None:
        raise StoreUnavailable("down")


@pytest.mark.parametrize(("method", "path"), [("POST", "/orchestrate"), ("GET", "/session/C"),
                                              ("GET", "/session/C/steps"), ("GET", "/readyz")])
async def test_store_unavailable_is_503(method: str, path: str, agents: ScriptedAgents) -> None:
    runtime = Runtime.build(Settings(), storage=Storage.embedded(DownBackend()), agents=agents)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        response = await api.request(method, path, json=body("greeting"))
    assert (response.status_code, error_of(response)["code"]) == (503, "store_unavailable")
    assert agents.requests == []


async def test_unknown_route_is_a_json_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/nowhere")
    assert (response.status_code, error_of(response)["code"]) == (404, "route_not_found")


async def test_wrong_method_is_a_json_405(api: httpx.AsyncClient) -> None:
    response = await api.put("/orchestrate", json=body("greeting"))
    assert (response.status_code, error_of(response)["code"]) == (405, "method_not_allowed")


async def test_healthz_answers_ok(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_answers_ready_with_the_store_it_asked(api: httpx.AsyncClient) -> None:
    assert (await api.get("/readyz")).json() == {"status": "ready", "store": "embedded"}


@pytest.mark.parametrize(("headers", "sent"), [
    ({}, "no content-type was sent"),
    ({"content-type": "text/plain"}, "content-type 'text/plain' was sent"),
])
async def test_a_body_without_the_json_media_type_says_what_is_expected(
    api: httpx.AsyncClient, headers: dict[str, str], sent: str
) -> None:
    response = await api.post("/orchestrate", content=json.dumps(body("greeting")),
                              headers=headers)
    assert response.status_code == 422
    message = error_of(response)["message"]
    assert "must be JSON sent with content-type application/json" in message
    assert sent in message


async def test_a_body_dripping_in_slower_than_the_limit_is_408() -> None:
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append((await receive())["body"])

    async def drip() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"{", "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    refusals: list[str] = []
    limit = BodyLimit(app, seconds=0.3, on_refusal=lambda scope, code: refusals.append(code))
    scope = {"type": "http", "method": "POST", "path": "/orchestrate", "headers": []}
    started = time.monotonic()
    await limit(scope, drip, send)
    assert time.monotonic() - started < 2
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_timeout"
    assert (refusals, received) == (["request_timeout"], [])


async def test_openapi_documents_every_route_and_its_errors(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths) == {"/orchestrate", "/session/{call_identify_id}",
                          "/session/{call_identify_id}/steps", "/accounts/{account_id}/calls",
                          "/accounts/{account_id}/data", "/healthz", "/readyz"}
    assert {"200", "403", "408", "409", "413", "422", "503"} <= set(paths["/orchestrate"]["post"][
        "responses"])
    assert {"204", "404", "503"} <= set(paths["/session/{call_identify_id}"]["delete"][
        "responses"])
    assert {"200", "202", "501", "503"} <= set(paths["/accounts/{account_id}/data"]["delete"][
        "responses"])
    assert {"CallsPage", "ErasureReceipt"} <= set(spec["components"]["schemas"])
    assert "ErrorResponse" in json.dumps(spec["components"])
    assert (await api.get("/docs")).status_code == 200


@pytest.mark.parametrize(("method", "path"), [("GET", "/accounts/ACC-1/calls"),
                                              ("DELETE", "/accounts/ACC-1/data")])
async def test_the_account_routes_without_an_archive_are_501_archive_off(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    answer = await api.request(method, path)
    assert answer.status_code == 501
    assert error_of(answer)["code"] == "archive_off"
    assert "ARCHIVE_TABLE" in error_of(answer)["message"]


async def test_app_can_serve_a_subset_of_routes(runtime: Runtime) -> None:
    app = create_app(runtime, routes=["get_session"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        assert (await c.post("/orchestrate", json=body("greeting"))).status_code == 404
        assert (await c.get("/session/X")).status_code == 404
        assert error_of(await c.get("/session/X"))["code"] == "session_not_found"


async def test_a_call_at_its_step_limit_is_refused_409_and_writes_nothing(
    backend: MemoryBackend, agents: ScriptedAgents
) -> None:
    runtime = Runtime.build(Settings(max_steps_per_call=3), storage=Storage.embedded(backend),
                                    agents=agents)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        for intent in ("greeting", "small_talk", "small_talk"):
            assert (await api.post("/orchestrate", json=body(intent))).status_code == 200
        refused = await api.post("/orchestrate", json=body("verify_identity"))
        steps = (await api.get("/session/CALL-1/steps")).json()["steps"]
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "step_limit_reached"
    assert refused.json()["error"]["max_steps"] == 3
    assert len(steps) == 3
    assert len(agents.requests) == 3


def test_the_step_limit_comes_from_the_environment() -> None:
    assert Settings.from_env({}).max_steps_per_call == 200
    assert Settings.from_env({"MAX_STEPS_PER_CALL": "50"}).max_steps_per_call == 50
    with pytest.raises(SettingsError, match="MAX_STEPS_PER_CALL"):
        Settings.from_env({"MAX_STEPS_PER_CALL": "0"})


class _Context:
    def __init__(self, left_ms: int) -> None:
        self.left_ms = left_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


class _Request:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope


@pytest.mark.parametrize(("left_ms", "expected"), [
    (None, None),  # not in Lambda: the engine's TURN_WAIT_SECONDS
    (25_000, 5.0),  # room for the whole wait
    (21_000, 2.0),  # 21 s left: the agent's 15 s and 4 s for Redis leave 2 s to wait
    (10_000, 0.0),  # less than a turn needs: no wait at all
])
def test_in_lambda_a_turn_waits_only_what_its_function_has_time_for(
    runtime: Runtime, left_ms: int | None, expected: float | None
) -> None:
    from orchestrator_flows.api.routes import turn_wait

    scope = {} if left_ms is None else {"aws.context": _Context(left_ms)}
    assert turn_wait(_Request(scope), runtime) == expected  # type: ignore[arg-type]
