"""The four Lambda functions, invoked with the `events/` fixtures as API Gateway sends them,
against a real Redis and the real a2a-sdk demo agents."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator_flows.api import create_app
from orchestrator_flows.flow_file import default_flow
from orchestrator_flows.runtime import YOUNG_COLLECTION_THRESHOLD, Runtime
from orchestrator_flows.settings import Settings
from tests.support.events import ARCHIVE_FUNCTIONS, EVENTS, load_event, session_event, turn_event

ROOT = Path(__file__).resolve().parents[2]
Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]

# Every fixture, in an order that tells a story: status, then error code or turn status.
EXPECTED: list[tuple[str, str, int, str | None]] = [
    ("get_session", "live", 404, "session_not_found"),
    ("orchestrate", "call_01_greeting", 200, "success"),
    ("orchestrate", "call_02_verify_identity", 200, "input_required"),
    ("orchestrate", "call_03_otp_verify", 200, "success"),
    ("orchestrate", "wrong_stage", 409, "intent_not_allowed"),
    ("orchestrate", "unknown_intent", 200, "success"),
    ("orchestrate", "call_04_refund_request", 200, "success"),
    ("orchestrate", "call_05_process_refund", 200, "success"),
    ("orchestrate", "call_06_end_call", 200, "success"),
    ("orchestrate", "invalid_json", 422, "invalid_request"),
    ("orchestrate", "missing_field", 422, "invalid_request"),
    ("orchestrate", "oversized_id", 422, "invalid_request"),
    ("orchestrate", "base64_body", 200, "success"),
    ("orchestrate", "missing_body", 422, "invalid_request"),
    ("orchestrate", "wrong_content_type", 422, "invalid_request"),
    ("orchestrate", "unknown_route", 404, "route_not_found"),
    ("orchestrate", "not_http_api", 400, "invalid_event"),
    ("orchestrate", "escalate", 200, "escalated"),
    ("orchestrate", "after_escalation", 409, "session_escalated"),
    ("orchestrate", "ask_for_person", 200, "escalated"),
    ("orchestrate", "spoken_no_intent", 200, "success"),
    ("orchestrate", "clarify", 200, "clarify"),
    ("get_session", "live", 200, None),
    ("get_session", "unknown", 404, "session_not_found"),
    ("get_session", "healthz", 200, None),
    ("get_steps", "live", 200, None),
    ("get_steps", "unknown", 404, "session_not_found"),
    ("delete_session", "live", 204, None),
    ("delete_session", "unknown", 404, "session_not_found"),
    ("delete_session", "live", 404, "session_not_found"),
]


def test_every_fixture_is_covered() -> None:
    # The archive's functions have their own story (test_archive_handlers.py).
    on_disk = {(p.parent.name, p.stem) for p in EVENTS.glob("*/*.json")
               if p.parent.name not in ARCHIVE_FUNCTIONS}
    assert on_disk == {(function, name) for function, name, _, _ in EXPECTED}


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"]) if response.get("body") else None


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_every_event_fixture_answers_per_the_api_contract(
    request: pytest.FixtureRequest, mode: str
) -> None:
    invoke: Invoke = request.getfixturevalue(mode)
    for function, name, status, detail in EXPECTED:
        response = invoke(function, load_event(function, name))
        assert response["statusCode"] == status, (function, name, response)
        body = body_of(response)
        if status >= 400:
            assert body["error"]["code"] == detail, (function, name, body)
            assert body["error"]["message"]
        elif function == "orchestrate":
            assert body["status"] == detail, (name, body["response"])
    # The story ends with the call deleted: none of its keys answer any more.
    steps = invoke("get_steps", load_event("get_steps", "live"))
    assert steps["statusCode"] == 404


def test_the_whole_call_is_recorded_through_the_handlers(warm: Invoke) -> None:
    for _, name, _, _ in EXPECTED[1:9]:
        warm("orchestrate", load_event("orchestrate", name))
    session = body_of(warm("get_session", load_event("get_session", "live")))
    assert session["is_complete"] is True
    assert [s["intent"] for s in session["steps"]] == [
        "greeting", "verify_identity", "otp_verify", "refund_request", "process_refund",
        "end_call"]


def test_a_call_through_the_handlers_equals_one_through_the_local_server(
    warm: Invoke, lambda_env: dict[str, str], demo_agent_urls: dict[str, str]
) -> None:
    turns = [json.loads(load_event("orchestrate", name)["body"]) for _, name, _, _ in EXPECTED[1:9]
             if name.startswith("call_")]

    for body in turns:
        warm("orchestrate", turn_event({**body, "call_identify_id": "VIA-LAMBDA"}))
    via_lambda = body_of(warm("get_session", session_event("get_session", "VIA-LAMBDA")))

    async def through_the_local_server() -> dict[str, Any]:
        runtime = Runtime.build(Settings(redis_url=lambda_env["REDIS_URL"],
                                                 agent_urls=demo_agent_urls))
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as local:
            for body in turns:
                await local.post("/orchestrate", json={**body, "call_identify_id": "VIA-SERVER"})
            session: dict[str, Any] = (await local.get("/session/VIA-SERVER")).json()
        await runtime.aclose()
        return session

    # Its own loop in its own thread: Mangum's loop in this thread must stay free.
    with ThreadPoolExecutor(1) as pool:
        via_server = pool.submit(asyncio.run, through_the_local_server()).result(60)

    def comparable(session: dict[str, Any]) -> Any:
        volatile = ("timestamp", "latency_ms", "task_id", "context_id", "call_identify_id")
        steps = [{k: v for k, v in s.items() if k not in volatile} for s in session["steps"]]
        for s in steps:
            s["response_data"] = {k: v for k, v in s["response_data"].items()
                                  if k not in volatile and k != "data"}
            # Each try's outcome is compared; its latency is not.
            s["response_data"]["attempts"] = [a["outcome"] for a in s["response_data"]["attempts"]]
        return ({k: v for k, v in session.items()
                 if k not in ("steps", "created_at", "updated_at", "call_identify_id")}, steps)

    assert comparable(via_lambda) == comparable(via_server)


def test_fifty_interleaved_warm_invocations_of_every_function(warm: Invoke) -> None:
    """Clients made on the first invocation serve the next 49 on Mangum's one event loop:
    no 'event loop is closed', no 'attached to a different loop'."""
    for i in range(50):
        call = f"WARM-{i:02d}"
        greeting = {"call_identify_id": call, "account_id": "ACC-1", "eci": "E",
                    "input_message": "hi", "intent": "greeting"}
        assert warm("orchestrate", turn_event(greeting))["statusCode"] == 200
        assert warm("get_session", session_event("get_session", call))["statusCode"] == 200
        assert warm("get_steps", session_event("get_steps", call))["statusCode"] == 200
        assert warm("delete_session", session_event("delete_session", call))["statusCode"] == 204


def test_missing_redis_url_fails_the_cold_start_naming_it(
    cold: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(Exception, match="REDIS_URL is not set"):
        cold("get_session", load_event("get_session", "live"))


def test_the_init_heap_is_frozen_and_what_invocations_leave_is_still_collected(
    lambda_env: dict[str, str],
) -> None:
    """Everything the init phase built is out of the cyclic collector's sight (its full
    passes would otherwise scan it on every invocation that triggers one); garbage made after
    it, a cycle here, is still collected, by the collector left on, only less often."""
    probe = (
        "import gc, weakref; from orchestrator_flows.local.invoke import load_function; "
        "load_function('orchestrate'); frozen = gc.get_freeze_count(); "
        "Node = type('Node', (), {}); node = Node(); node.me = node; "
        "alive = weakref.ref(node); del node; "
        "junk = [[] for _ in range(gc.get_threshold()[0] * 2)]; "
        "print(frozen > 1000, alive() is None, gc.isenabled(), gc.get_threshold()[0])"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["True", "True", "True", str(YOUNG_COLLECTION_THRESHOLD)]


@pytest.mark.parametrize("function", ["get_session", "get_steps", "delete_session"])
def test_read_functions_import_neither_httpx_nor_the_a2a_client_nor_the_flow(
    lambda_env: dict[str, str], function: str
) -> None:
    probe = (
        "import sys; from orchestrator_flows.local.invoke import load_function; "
        f"load_function({function!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'yaml') "
        "or m in ('orchestrator_flows.a2a', 'orchestrator_flows.flow')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_invoke_command_prints_the_handlers_response(lambda_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator_flows.local.cli", "invoke", "get_session",
         str(EVENTS / "get_session" / "unknown.json")],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert response["statusCode"] == 404
    assert '"ColdStart"' in done.stdout  # the Powertools output is shown too


def test_invoke_command_reads_an_env_file_and_fails_when_the_handler_raises(
    tmp_path: Path, lambda_env: dict[str, str]
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env_file = tmp_path / "lambda.env"
    env_file.write_text(f"# like sam's --env-vars\nREDIS_URL={lambda_env['REDIS_URL']}\n")
    command = [sys.executable, "-m", "orchestrator_flows.local.cli", "invoke", "get_steps",
               str(EVENTS / "get_steps" / "unknown.json")]
    with_file = subprocess.run([*command, "--env-file", str(env_file)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60, check=False)
    without = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert with_file.returncode == 0, with_file.stderr
    assert without.returncode == 2  # the cold start failed: one line, no traceback
    assert "REDIS_URL is not set" in without.stderr
    assert "Traceback" not in without.stderr


def test_invoke_command_reads_sam_s_env_json(tmp_path: Path, lambda_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env_json = tmp_path / "env.json"
    env_json.write_text(json.dumps({"Parameters": {"REDIS_URL": "redis://nowhere:1/0"},
                                    "GetStepsFunction": {"REDIS_URL": lambda_env["REDIS_URL"]},
                                    "OrchestrateFunction": {"REDIS_URL": "redis://other:1/0"}}))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator_flows.local.cli", "invoke", "get_steps",
         str(EVENTS / "get_steps" / "unknown.json"), "--env-file", str(env_json)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert response["statusCode"] == 404  # it reached the Redis of its own section


def test_the_shipped_env_json_is_a_whole_local_environment(lambda_env: dict[str, str]) -> None:
    shipped = json.loads((EVENTS / "env.json").read_text())["Parameters"]
    assert shipped["REDIS_MODE"] == "standalone"  # the template's "cluster" would not do here
    assert {name.removeprefix("AGENT_URL_").lower() for name in shipped
            if name.startswith("AGENT_URL_")} == set(default_flow().agents)
    assert all(shipped[f"AGENT_URL_{name.upper()}"] == agent.url
               for name, agent in default_flow().agents.items())


def test_a_variable_the_shell_sets_wins_over_the_env_file() -> None:
    from orchestrator_flows.local.invoke import file_fills_the_rest

    shipped = json.loads((EVENTS / "env.json").read_text())["Parameters"]
    assert shipped["ARCHIVE_TABLE"] == ""  # a local Redis: no table, unless the shell names one
    merged = file_fills_the_rest(shipped, {"ARCHIVE_TABLE": "my-archive-table"})
    assert "ARCHIVE_TABLE" not in merged  # the shell's stays
    assert merged["REDIS_URL"] == "redis://127.0.0.1:6379/0"  # the file fills the rest
