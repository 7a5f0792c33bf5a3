"""Edges of parallel agents and of reading a caller's words that a review found: versions and
breakers of every agent a turn calls, a half-open probe outlasting `first`, the deadline a
classifier agent leaves, attempts per asking agent, one unstorable part among several, the
newest open task, long messages, stable messageIds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from orchestrator_flows.a2a import AgentReply, AgentRequest
from orchestrator_flows.breaker import Breakers
from orchestrator_flows.breaker.memory_store import MemoryBreakerStore
from orchestrator_flows.engine import Orchestrator, Turn
from orchestrator_flows.errors import AgentFailure, FailureCode
from orchestrator_flows.flow import Flow
from orchestrator_flows.flow_file import default_flow, parse_flow
from orchestrator_flows.observer import SilentObserver
from orchestrator_flows.records import to_json
from orchestrator_flows.store import SessionStore
from orchestrator_flows.store.memory_backend import MemoryBackend
from tests.support.scripted import ScriptedAgents, completed, input_required
from tests.unit.test_flow_rules import five_stages, orchestrator_of, say
from tests.unit.test_intents import answer, said, with_classifier_agent
from tests.unit.test_parallel_agents import ask, at_capture


def together(rule: str, extra: str = "") -> str:
    return five_stages({"INTENT_CAPTURE": extra}).replace(
        "{refund_request: refund}",
        f"{{refund_request: {{agents: [refund, closing], succeed_when: {rule}}}}}")


def versioned(text: str, agent: str) -> str:
    return text.replace(
        f"  {agent}: {{url: 'http://127.0.0.1:9/{agent}'}}",
        f"  {agent}: {{versions: [{{name: v1, url: 'http://127.0.0.1:9/{agent}1', weight: 0}}, "
        f"{{name: v2, url: 'http://127.0.0.1:9/{agent}2', weight: 1}}]}}")


def tripping(text: str, agent: str) -> str:
    return text.replace(
        f"  {agent}: {{url: 'http://127.0.0.1:9/{agent}'}}",
        f"  {agent}: {{url: 'http://127.0.0.1:9/{agent}', circuit_breaker: "
        "{failures: 1, failure_rate: 0.1, cooldown_seconds: 0.05}}")


def sharing(flow: Flow, agents: ScriptedAgents, breakers: MemoryBreakerStore,
            backend: MemoryBackend) -> Orchestrator:
    """An instance of its own (its own view of the breakers) over shared stores."""
    store = SessionStore(backend=backend, ttl_seconds=3600, lease_seconds=20)
    return Orchestrator(flow=flow, store=store, agents=agents,
                        breakers=Breakers(store=breakers, probe_seconds=1.0),
                        observer=SilentObserver(), max_steps=200)


async def test_every_agent_of_a_route_is_called_as_the_version_the_call_holds() -> None:
    text = versioned(versioned(together("all"), "refund"), "closing")
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(parse_flow(text, "f"), agents)
    await at_capture(orchestrator)
    result = await ask(orchestrator)
    assert [part["agent"] for part in result["parts"]] == ["refund", "closing"]
    assert [(r.agent.name, r.agent.version) for r in agents.requests[-2:]] == [
        ("refund", "v2"), ("closing", "v2")]
    session = (await orchestrator.store.get("CALL-1") or (None,))[0]
    assert session is not None
    assert session.agent_versions == {"refund": "v2", "closing": "v2"}


def breaking_flow() -> Flow:
    text = tripping(tripping(together("any"), "closing"), "greeting").replace(
        "cooldown_seconds: 0.05", "cooldown_seconds: 60")
    return parse_flow(text.replace(
        "    intents: {greeting: greeting}", "    intents: {greeting: greeting}\n"
        "    examples:\n      greeting: {en: [hello there, good morning]}"), "f")


async def test_an_open_breaker_seen_by_another_instance_stops_a_read_turns_agent() -> None:
    agents = ScriptedAgents().then("greeting", AgentFailure(FailureCode.TIMEOUT, "down"))
    breakers, backend = MemoryBreakerStore(), MemoryBackend()
    first = sharing(breaking_flow(), agents, breakers, backend)
    await first.handle_turn(Turn("CALL-A", "ACC-1", "ECI-1", "x", "greeting"))  # opens it
    other = sharing(breaking_flow(), agents, breakers, backend)
    read = to_json(await other.handle_turn(said("good morning", call="CALL-C")))
    assert read["response"]["error"]["code"] == "agent_unavailable"
    assert len(agents.to("greeting")) == 1


async def test_an_open_breaker_seen_by_another_instance_stops_an_other_agent() -> None:
    agents = ScriptedAgents().then("closing", AgentFailure(FailureCode.TIMEOUT, "down"))
    breakers, backend = MemoryBreakerStore(), MemoryBackend()
    first = sharing(breaking_flow(), agents, breakers, backend)
    for intent in ("greeting", "verify_identity", "refund_request"):
        await first.handle_turn(Turn("CALL-A", "ACC-1", "ECI-1", "x", intent))  # opens it
    other = sharing(breaking_flow(), agents, breakers, backend)
    for intent in ("greeting", "verify_identity", "refund_request"):
        await other.handle_turn(Turn("CALL-B", "ACC-1", "ECI-1", "x", intent))
    assert len(agents.to("closing")) == 1


async def test_a_half_open_probe_left_behind_by_first_still_reports() -> None:
    flow = parse_flow(tripping(together("first"), "closing"), "f")
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(flow, agents)
    await at_capture(orchestrator)
    agents.then("refund", 0.2).then("closing", AgentFailure(FailureCode.TIMEOUT, "slow"))
    assert (await ask(orchestrator))["status"] == "success"  # closing's breaker opened
    await asyncio.sleep(0.1)  # its cool-down is over: its next call is the probe
    await say(orchestrator, "greeting", call="CALL-2")
    await say(orchestrator, "verify_identity", call="CALL-2")
    agents.then("closing", 0.3)  # the probe: slow but healthy; refund answers at once
    probed = to_json(await orchestrator.handle_turn(
        Turn("CALL-2", "ACC-1", "ECI-1", "hi", "refund_request")))
    assert [p["error"]["code"] if p["error"] else "ok" for p in probed["parts"]] == [
        "ok", "agent_not_awaited"]
    await asyncio.gather(*orchestrator._probes)  # it ran on, and told the breaker
    await say(orchestrator, "process_refund", call="CALL-2")
    assert (await say(orchestrator, "end_call", call="CALL-2"))["status"] == "success"


class SlowFailingClassifier(ScriptedAgents):
    async def send(self, request: AgentRequest) -> AgentReply:
        if request.agent.name == "nlu":
            self.requests.append(request)
            await asyncio.sleep(request.timeout_seconds or 0)  # it uses its whole deadline
            raise AgentFailure(FailureCode.TIMEOUT, "no answer")
        return await super().send(request)


async def test_a_failed_classifier_agents_time_is_taken_off_the_turns_agent() -> None:
    agents = SlowFailingClassifier()
    orchestrator = orchestrator_of(with_classifier_agent(), agents)
    orchestrator.agent_timeout_seconds = 15.0
    result = await answer(orchestrator, said("good morning"))
    assert (result["intent"], result["intent_source"]) == ("greeting", "classifier")
    deadline = agents.to("greeting")[0].timeout_seconds
    assert deadline is not None
    assert deadline <= 15.0 - 1.4


async def test_the_classifier_agents_message_id_is_the_same_on_a_retry() -> None:
    agents = ScriptedAgents().then("nlu", AgentFailure(FailureCode.UNREACHABLE, "x")).then(
        "nlu", completed(intent="greeting"))
    for _ in range(2):  # the same keyed turn, on two instances (its first answer was lost)
        await orchestrator_of(with_classifier_agent(), agents).handle_turn(
            said("hello there"), "key-1")
    first, second = (r.message_id for r in agents.to("nlu"))
    assert first == second


async def test_only_an_agent_asking_again_makes_an_attempt() -> None:
    text = together("all", "max_attempts: 2")
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(parse_flow(text, "f"), agents)
    await at_capture(orchestrator)
    statuses = []
    for asking, done in (("closing", "refund"), ("refund", "closing"), ("closing", "refund")):
        agents.then(done, completed()).then(asking, input_required(f"{asking}-task"))
        statuses.append((await ask(orchestrator))["status"])
    # each agent's first question, in turn: no attempt, no escalation
    assert statuses == ["input_required"] * 3


async def test_one_unstorable_part_spoils_only_itself() -> None:
    agents = ScriptedAgents().then("refund", input_required("r-1")).then(
        "closing", completed(x=float("nan")))
    orchestrator = orchestrator_of(parse_flow(together("any"), "f"), agents)
    await at_capture(orchestrator)
    result = await ask(orchestrator)
    assert result["status"] == "input_required"  # the refund agent's question stands
    assert [p["error"]["code"] if p["error"] else p["state"] for p in result["parts"]] == [
        "input-required", "agent_bad_response"]
    found = await orchestrator.store.get("CALL-1")
    assert found is not None
    assert json.loads(found[1][-1])["parts"] == result["parts"]
    await ask(orchestrator)
    assert agents.to("refund")[-1].task_id == "r-1"


async def test_a_short_follow_up_goes_to_the_newest_question() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    for intent in ("greeting", "verify_identity"):
        await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "hi", intent))
    agents.then("refund", input_required("t-refund"))
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "refund", "refund_request"))
    agents.then("balance", input_required("t-balance"))
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "my balance?",
                                        "balance_inquiry"))
    result = await answer(orchestrator, said("the checking one"))
    assert (result["intent"], result["intent_source"]) == ("balance_inquiry", "continuation")


async def test_a_long_message_is_never_a_short_follow_up() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "hi", "greeting"))
    agents.then("auth", input_required("task-auth"))
    await orchestrator.handle_turn(Turn("CALL-1", "ACC-1", "ECI-1", "I am Sam",
                                        "verify_identity"))
    message: Any = "." * 4100 + " my one time password is 7788 " * 50
    result = await answer(orchestrator, said(message))
    assert result["intent_source"] != "continuation"
