"""Intent from the caller's words (the flows issue, item 4): the classifier's accuracy on the
held-out set, abstaining, a follow-up continuing its stage's task, locales, and what the turn
records — over the embedded store and scripted agents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from orchestrator_flows.engine import Orchestrator, Turn
from orchestrator_flows.errors import FlowConfigError
from orchestrator_flows.flow_file import default_flow, parse_flow
from orchestrator_flows.records import to_json
from tests.support.scripted import STAGE_INTENTS, ScriptedAgents, input_required
from tests.unit.test_flow_rules import five_stages, orchestrator_of

HELD_OUT = Path(__file__).resolve().parents[1] / "data" / "intents_heldout.yaml"


def said(text: str, call: str = "CALL-1", locale: str | None = None) -> Turn:
    return Turn(call, "ACC-1", "ECI-1", text, None, locale)


async def answer(orchestrator: Orchestrator, turn: Turn) -> dict[str, Any]:
    found: dict[str, Any] = to_json(await orchestrator.handle_turn(turn))
    return found


async def steps_of(orchestrator: Orchestrator, call: str = "CALL-1") -> list[dict[str, Any]]:
    found = await orchestrator.store.get(call)
    assert found is not None
    return [json.loads(step) for step in found[1]]


@pytest.mark.parametrize(("locale", "floor"), [("en", 0.80), ("es", 0.85)])
def test_the_default_flow_reads_the_held_out_set(locale: str, floor: float) -> None:
    flow = default_flow()
    rows = yaml.safe_load(HELD_OUT.read_text())[locale]
    read = [flow.classifier.classify(text, locale, flow.stage(stage).intents).intent
            for stage, _, text in rows]
    right = sum(found == expected for found, (_, expected, _) in zip(read, rows, strict=True))
    wrong = sum(found is not None and found != expected
                for found, (_, expected, _) in zip(read, rows, strict=True))
    assert right / len(rows) >= floor, (right, len(rows))
    assert wrong <= 1  # a wrong intent sends the call to the wrong agent: asking again is better


async def test_words_it_cannot_read_are_answered_clarify_and_nothing_is_advanced() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    for intent in STAGE_INTENTS[:2]:
        await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "hi", intent))
    called = len(agents.requests)
    result = await answer(orchestrator, said("the purple elephant sings at midnight"))
    assert (result["status"], result["intent"], result["response"], result["next_flow_id"]) == (
        "clarify", None, None, 3)
    assert result["intent_source"] == "classifier"
    assert [c["intent"] for c in result["candidates"]][:1]
    assert {c["intent"] for c in result["candidates"]} <= set(default_flow().stage(3).intents)
    assert len(agents.requests) == called
    step = (await steps_of(orchestrator))[-1]
    assert (step["response_status"], step["intent"], step["agent"], step["intent_source"]) == (
        "clarify", None, None, "classifier")


async def test_read_words_reach_the_agent_as_the_intent_with_their_source() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    first = await answer(orchestrator, said("buenos días", locale="es"))
    assert (first["intent"], first["intent_source"], first["next_flow_id"]) == (
        "greeting", "classifier", 2)
    assert first["confidence"] > 0.35
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "x", "verify_identity"))
    refund = await answer(orchestrator, said("me cobraron dos veces, quiero mi dinero de vuelta",
                                             locale="es-MX"))
    assert (refund["intent"], refund["response"]["agent"]) == ("refund_request", "refund")
    assert agents.to("refund")[-1].metadata["intent"] == "refund_request"
    step = (await steps_of(orchestrator))[-1]
    assert (step["intent_source"], step["confidence"]) == ("classifier", refund["confidence"])


async def test_a_short_follow_up_continues_the_stages_open_task() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "hi", "greeting"))
    agents.then("auth", input_required("task-auth"))
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "I am Sam", "verify_identity"))
    follow = await answer(orchestrator, said("4 8 2 9 1 3"))
    assert (follow["intent"], follow["intent_source"], follow["confidence"]) == (
        "verify_identity", "continuation", None)
    assert agents.to("auth")[-1].task_id == "task-auth"
    assert follow["next_flow_id"] == 3


async def test_a_long_message_at_a_stage_with_an_open_task_is_read_not_continued() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "hi", "greeting"))
    agents.then("auth", input_required("task-auth"))
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "I am Sam", "verify_identity"))
    long = await answer(orchestrator, said(
        "sorry I did not get it but the one time password you sent me is 7788 I think"))
    assert (long["intent"], long["intent_source"]) == ("otp_verify", "classifier")


async def test_clarify_is_an_attempt_and_the_cap_hands_the_caller_over() -> None:
    flow = parse_flow(five_stages({"GREETING": "max_attempts: 2\nexamples:\n"
                                   "  greeting: {en: [hello there, good morning]}"}), "f")
    orchestrator = orchestrator_of(flow, ScriptedAgents())
    first = await answer(orchestrator, said("zzz qqq"))
    second = await answer(orchestrator, said("xkcd vvv"))
    assert (first["status"], second["status"]) == ("clarify", "escalated")
    assert second["handoff"]["reason"] == "max_attempts"
    assert "Last agent outcome: clarify." in second["handoff"]["summary"]


async def test_a_phrase_asking_for_a_person_hands_over_without_an_intent() -> None:
    orchestrator = orchestrator_of(default_flow(), ScriptedAgents())
    result = await answer(orchestrator, said("I want to talk to a human"))
    assert (result["status"], result["handoff"]["reason"]) == ("escalated", "caller_request")


@pytest.mark.parametrize(("asked", "intent"), [("es-MX", "greeting"), ("fr", None)])
async def test_a_locale_falls_back_to_its_language_then_the_flows(
        asked: str, intent: str | None) -> None:
    orchestrator = orchestrator_of(default_flow(), ScriptedAgents())
    result = await answer(orchestrator, said("hola, buenas tardes", locale=asked))
    assert result["intent"] == intent  # fr: read as English, where it is not a greeting


async def test_the_api_takes_a_turn_without_an_intent_and_checks_its_locale(
        api: httpx.AsyncClient) -> None:
    turn = {"call_identify_id": "CALL-9", "account_id": "ACC-1", "eci": "ECI-1",
            "input_message": "good morning"}
    ok = await api.post("/orchestrate", json=turn)
    assert (ok.status_code, ok.json()["intent"], ok.json()["intent_source"]) == (
        200, "greeting", "classifier")
    bad = await api.post("/orchestrate", json={**turn, "locale": "Spanish!"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")


@pytest.mark.parametrize(("examples", "problem"), [
    ("  nope: {en: [hi]}", "stage GREETING: examples of 'nope', which is not an intent of the "
                           "stage"),
    ("  greeting: {English: [hi]}", "'English' is not a locale"),
    ("  greeting: {en: ['']}", "stages.0.examples.greeting.en.0"),
])
def test_examples_are_checked(examples: str, problem: str) -> None:
    with pytest.raises(FlowConfigError) as error:
        parse_flow(five_stages({"GREETING": "examples:\n" + examples}), "f")
    assert problem in str(error.value)


def with_classifier_agent() -> Any:
    text = five_stages(head="classifier: {agent: nlu, agent_timeout_seconds: 1.5}").replace(
        "  fallback: {url: 'http://127.0.0.1:9/fallback'}",
        "  fallback: {url: 'http://127.0.0.1:9/fallback'}\n  nlu: {url: 'http://127.0.0.1:9/nlu'}")
    text = text.replace("    intents: {greeting: greeting}",
                        "    intents: {greeting: greeting}\n    examples:\n"
                        "      greeting: {en: [hello there, good morning]}")
    return parse_flow(text, "flow.yaml")


async def test_a_classifier_agent_reads_the_words_and_the_turn_has_what_is_left() -> None:
    from tests.support.scripted import completed

    agents = ScriptedAgents().then("nlu", completed(intent="greeting", confidence=0.91))
    orchestrator = orchestrator_of(with_classifier_agent(), agents)
    orchestrator.agent_timeout_seconds = 15.0
    result = await answer(orchestrator, said("yo what's up"))
    assert (result["intent"], result["intent_source"], result["confidence"]) == (
        "greeting", "agent", 0.91)
    asked = agents.to("nlu")[0]
    assert (asked.timeout_seconds, asked.metadata["candidates"], asked.metadata["purpose"]) == (
        1.5, ["greeting"], "intent_classification")
    served = agents.to("greeting")[0]
    assert served.timeout_seconds is not None
    assert served.timeout_seconds < 15.0


@pytest.mark.parametrize(("said_by_agent", "status", "source"), [
    ({"intent": "verify_identity", "confidence": 0.99}, "clarify", "agent"),  # not this stage's
    ({"intent": "greeting", "confidence": 0.1}, "clarify", "agent"),  # below the threshold
    ({"intent": "greeting", "confidence": True}, "clarify", "agent"),
    ({"nothing": 1}, "clarify", "agent"),
])
async def test_a_classifier_agents_reading_that_does_not_fit_asks_again(
        said_by_agent: dict[str, Any], status: str, source: str) -> None:
    from tests.support.scripted import completed

    agents = ScriptedAgents().then("nlu", completed(**said_by_agent))
    orchestrator = orchestrator_of(with_classifier_agent(), agents)
    result = await answer(orchestrator, said("hello there"))
    assert (result["status"], result["intent_source"], result["intent"]) == (
        status, source, None)
    assert not agents.to("greeting")


async def test_a_failing_classifier_agent_leaves_the_reading_to_the_offline_classifier() -> None:
    from orchestrator_flows.errors import AgentFailure, FailureCode

    agents = ScriptedAgents().then("nlu", AgentFailure(FailureCode.TIMEOUT, "slow"))
    orchestrator = orchestrator_of(with_classifier_agent(), agents)
    result = await answer(orchestrator, said("good morning"))
    assert (result["intent"], result["intent_source"]) == ("greeting", "classifier")


def test_a_classifier_agent_must_be_an_agent_of_the_flow() -> None:
    with pytest.raises(FlowConfigError) as error:
        parse_flow(five_stages(head="classifier: {agent: ghost}"), "f")
    assert "classifier.agent 'ghost' is not an agent" in str(error.value)
