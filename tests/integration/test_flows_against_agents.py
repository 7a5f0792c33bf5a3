"""Attempts, escalation and transitions through the HTTP API, against real Redis (standalone
and cluster) and the real a2a-sdk demo agents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_end_to_end import api_client
from tests.support.scripted import body

FLOW = """
agents:
  greeting: {url: "http://127.0.0.1:9/"}
  auth: {url: "http://127.0.0.1:9/"}
  account: {url: "http://127.0.0.1:9/"}
  refund: {url: "http://127.0.0.1:9/"}
  closing: {url: "http://127.0.0.1:9/"}
  fallback: {url: "http://127.0.0.1:9/"}
fallback_agent: fallback
escalation:
  queue: front_desk
  phrases: {es: [hablar con una persona]}
stages:
  - id: 1
    name: GREETING
    intents: {greeting: greeting}
  - id: 2
    name: AUTHENTICATION
    intents: {verify_identity: auth}
    max_attempts: 2
    queue: identity_desk
  - id: 3
    name: INTENT_CAPTURE
    intents: {account_inquiry: account, refund_request: refund}
    transitions:
      - {outcome: completed, when: {account_status: active}, to: CLOSING}
  - id: 4
    name: FULFILLMENT
    intents: {process_refund: refund}
  - id: 5
    name: CLOSING
    intents: {end_call: closing}
"""


@pytest.fixture(params=["standalone", "cluster"])
def redis_settings(request: pytest.FixtureRequest, demo_agent_urls: dict[str, str],
                   tmp_path: Path) -> dict[str, Any]:
    mode = request.param
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW)
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    return {"redis_url": url, "redis_mode": mode, "orchestrator_config": str(path),
            "agent_urls": {name: demo_agent_urls[name] for name in
                           ("greeting", "auth", "account", "refund", "closing", "fallback")}}


async def test_authentication_escalates_after_its_attempts_with_a_real_agent(
        redis_settings: dict[str, Any]) -> None:
    call = f"FLOW-AUTH-{redis_settings['redis_mode']}"
    async with api_client(**redis_settings) as (api, _):
        await api.post("/orchestrate", json=body("greeting", call=call))
        # The agent's question opens its task (no attempt); each time it asks again is one.
        for said in ("I am Sam", "I forgot it"):
            asked = (await api.post("/orchestrate", json=body("verify_identity", call=call,
                                                              text=said))).json()
            assert (asked["status"], asked["handoff"]) == ("input_required", None)
        second = (await api.post("/orchestrate", json=body("verify_identity", call=call,
                                                           text="no idea, sorry"))).json()
        assert (second["status"], second["next_flow_id"]) == ("escalated", None)
        assert (second["handoff"]["queue"], second["handoff"]["reason"]) == (
            "identity_desk", "max_attempts")
        # The real agent asked for the code again: its answer is kept with the handoff.
        assert second["response"]["state"] == "input-required"
        late = await api.post("/orchestrate", json=body("verify_identity", call=call,
                                                        text="482913"))
        assert late.status_code == 409
        assert late.json()["error"] | {"message": ""} == {
            "code": "session_escalated", "message": "", "queue": "identity_desk",
            "reason": "max_attempts"}
        state = (await api.get(f"/session/{call}")).json()
        steps = (await api.get(f"/session/{call}/steps")).json()["steps"]
    assert state["handoff"] == second["handoff"]
    assert (state["current_flow_id"], state["is_complete"]) == (2, False)
    assert [s["response_status"] for s in steps] == [
        "success", "input_required", "input_required", "escalated"]


async def test_a_caller_who_asks_for_a_person_is_handed_over_without_an_agent(
        redis_settings: dict[str, Any]) -> None:
    call = f"FLOW-ASK-{redis_settings['redis_mode']}"
    async with api_client(**redis_settings) as (api, _):
        await api.post("/orchestrate", json=body("greeting", call=call))
        answer = (await api.post("/orchestrate", json=body(
            "verify_identity", call=call, text="Quiero HABLAR con una persona, por favor"))).json()
        steps = (await api.get(f"/session/{call}/steps")).json()["steps"]
    assert (answer["status"], answer["response"]) == ("escalated", None)
    assert (answer["handoff"]["reason"], answer["handoff"]["queue"]) == (
        "caller_request", "identity_desk")
    assert answer["session_summary"]["steps"] == steps
    assert (steps[-1]["agent"], steps[-1]["handoff"]) == (None, answer["handoff"])


async def test_a_real_agents_data_chooses_the_branch(redis_settings: dict[str, Any]) -> None:
    mode = redis_settings["redis_mode"]
    async with api_client(**redis_settings) as (api, _):
        for call, intent, expected in ((f"FLOW-ACC-{mode}", "account_inquiry", 5),
                                       (f"FLOW-REF-{mode}", "refund_request", 4)):
            await api.post("/orchestrate", json=body("greeting", call=call))
            await api.post("/orchestrate", json=body("verify_identity", call=call,
                                                     text="code 482913"))
            answer = (await api.post("/orchestrate", json=body(intent, call=call))).json()
            assert (answer["status"], answer["next_flow_id"]) == ("success", expected)
            state = (await api.get(f"/session/{call}")).json()
            assert state["completed_flows"] == [1, 2, 3]


SPOKEN = (  # a whole call in Spanish, no intents: (words, intent read, source, status, next)
    ("hola, buenas tardes", "greeting", "classifier", "success", 2),
    ("me llamo Ana López y soy la titular", "verify_identity", "classifier", "input_required", 2),
    ("482913", "verify_identity", "continuation", "success", 3),
    ("me cobraron dos veces, quiero que me devuelvan el dinero", "refund_request", "classifier",
     "success", 4),
    ("sí, adelante con el reembolso", "process_refund", "classifier", "success", 5),
    ("eso es todo, adiós", "end_call", "classifier", "success", None),
)


@pytest.mark.parametrize("mode", ["standalone", "cluster"])
async def test_a_whole_call_in_spanish_without_intents_through_real_agents(
        request: pytest.FixtureRequest, demo_agent_urls: dict[str, str], mode: str) -> None:
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    call = f"SPOKEN-{mode}"
    async with api_client(redis_url=url, redis_mode=mode, agent_urls=demo_agent_urls) as (api, _):
        for words, intent, source, status, following in SPOKEN:
            turn = {"call_identify_id": call, "account_id": "ACC-1", "eci": "ECI-1",
                    "input_message": words, "locale": "es"}
            answer = (await api.post("/orchestrate", json=turn)).json()
            assert (answer["intent"], answer["intent_source"], answer["status"],
                    answer["next_flow_id"]) == (intent, source, status, following), answer
        steps = (await api.get(f"/session/{call}/steps")).json()["steps"]
    assert [s["intent_source"] for s in steps] == [row[2] for row in SPOKEN]
    # The code continued the task the name opened, on the real auth agent.
    assert steps[1]["response_data"]["task_id"] == steps[2]["response_data"]["task_id"]


DEFAULT_FLOW_TEXT = (Path(__file__).resolve().parents[2] / "layers" / "core"
                     / "orchestrator_flows" / "default_flow.yaml").read_text()

PARALLEL = """
agents:
  greeting: {url: "http://127.0.0.1:9/"}
  slow: {url: "http://127.0.0.1:9/"}
  failing: {url: "http://127.0.0.1:9/"}
  asking: {url: "http://127.0.0.1:9/"}
  fallback: {url: "http://127.0.0.1:9/"}
fallback_agent: fallback
stages:
  - id: 1
    name: GREETING
    intents: {greeting: greeting}
  - id: 2
    name: INTENT_CAPTURE
    intents:
      look_up: {agents: [slow, failing, asking], succeed_when: RULE}
"""


@pytest.mark.parametrize(("mode", "rule", "status", "following"), [
    ("standalone", "all", "error", 2),
    ("cluster", "all", "error", 2),
    ("standalone", "any", "success", None),
    ("standalone", "first", "success", None),
])
async def test_parallel_agents_one_slow_one_failing_one_asking(
        request: pytest.FixtureRequest, serve: Any, demo_agent_urls: dict[str, str],
        tmp_path: Path, mode: str, rule: str, status: str, following: int | None) -> None:
    from orchestrator_flows.local.demo_agents import DemoExecutor, build_agent_app
    from tests.support.agents import EndingExecutor, SlowExecutor

    urls = {
        "slow": await serve(lambda at: build_agent_app(
            "slow", at, executor=SlowExecutor("refund", 0.3))),
        "failing": await serve(lambda at: build_agent_app(
            "failing", at, executor=EndingExecutor("failed"))),
        "asking": await serve(lambda at: build_agent_app(
            "asking", at, executor=DemoExecutor("auth"))),  # asks for a code first
        "greeting": demo_agent_urls["greeting"], "fallback": demo_agent_urls["fallback"]}
    path = tmp_path / "flow.yaml"
    path.write_text(PARALLEL.replace("RULE", rule))
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    call = f"PAR-{mode}-{rule}"
    async with api_client(redis_url=url, redis_mode=mode, orchestrator_config=str(path),
                          agent_urls=urls) as (api, _):
        await api.post("/orchestrate", json=body("greeting", call=call))
        answer = (await api.post("/orchestrate", json=body("look_up", call=call))).json()
        again = None
        if following is not None:  # the asking agent's task is open: the code goes to it
            again = (await api.post("/orchestrate", json=body(
                "look_up", call=call, text="the code is 482913"))).json()
        steps = (await api.get(f"/session/{call}/steps")).json()["steps"]
    assert (answer["status"], answer["next_flow_id"]) == (status, following)
    parts = {part["agent"]: part for part in answer["parts"]}
    # Every agent's part is kept, the failure and the question among them.
    assert parts["failing"]["error"]["code"] == "agent_task_failed"
    assert parts["asking"]["state"] == "input-required"
    assert parts["slow"]["state"] == "completed"
    assert parts["slow"]["latency_ms"] >= 300
    assert steps[1]["parts"] == answer["parts"]
    if again is not None:
        continued = {part["agent"]: part for part in again["parts"]}
        assert continued["asking"]["state"] == "completed"
        assert continued["asking"]["task_id"] == parts["asking"]["task_id"]


@pytest.mark.parametrize("mode", ["standalone", "cluster"])
async def test_a_real_classifier_agent_reads_the_words(
        request: pytest.FixtureRequest, serve: Any, demo_agent_urls: dict[str, str],
        tmp_path: Path, mode: str) -> None:
    from orchestrator_flows.local.demo_agents import build_agent_app
    from tests.support.agents import ClassifierExecutor

    nlu = ClassifierExecutor()
    classifier_url = await serve(lambda at: build_agent_app("nlu", at, executor=nlu))
    flow = DEFAULT_FLOW_TEXT.replace(
        "fallback_agent: fallback", "fallback_agent: fallback\nclassifier: {agent: nlu}"
    ).replace("agents:\n", "agents:\n  nlu: {url: \"http://127.0.0.1:9/\"}\n", 1)
    path = tmp_path / "flow.yaml"
    path.write_text(flow)
    url = request.getfixturevalue("redis_url" if mode == "standalone" else "redis_cluster_url")
    call = f"NLU-{mode}"
    async with api_client(redis_url=url, redis_mode=mode, orchestrator_config=str(path),
                          agent_urls={**demo_agent_urls, "nlu": classifier_url}) as (api, _):
        turn = {"call_identify_id": call, "account_id": "ACC-1", "eci": "ECI-1",
                "input_message": "greeting from me"}
        read = (await api.post("/orchestrate", json=turn)).json()
        unsure = (await api.post("/orchestrate", json={
            **turn, "input_message": "something else entirely"})).json()
    assert (read["intent"], read["intent_source"], read["confidence"], read["status"]) == (
        "greeting", "agent", 0.93, "success")
    assert (unsure["status"], unsure["intent_source"], unsure["next_flow_id"]) == (
        "clarify", "agent", 2)
    assert nlu.asked[1]["candidates"] == ["verify_identity", "authenticate", "otp_verify"]
