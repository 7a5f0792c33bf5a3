"""Parallel agents (the flows issue, item 3): an intent served by several agents at once, the
rule that decides the turn, each agent's part in the step, tasks left open per agent — over
the embedded store and scripted agents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator_flows.engine import Orchestrator
from orchestrator_flows.errors import AgentFailure, FailureCode, FlowConfigError
from orchestrator_flows.flow_file import parse_flow
from orchestrator_flows.records import to_json
from tests.support.scripted import ScriptedAgents, completed, input_required, turn
from tests.unit.test_flow_rules import five_stages, orchestrator_of


def flow_with(rule: str, extra: str = "") -> Any:
    text = five_stages({"INTENT_CAPTURE": extra}).replace(
        "{refund_request: refund}",
        f"{{refund_request: {{agents: [refund, closing, fallback], succeed_when: {rule}}}}}")
    return parse_flow(text, "flow.yaml")


async def at_capture(orchestrator: Orchestrator) -> None:
    for intent in ("greeting", "verify_identity"):
        await orchestrator.handle_turn(turn(intent))


async def ask(orchestrator: Orchestrator) -> dict[str, Any]:
    answer: dict[str, Any] = to_json(await orchestrator.handle_turn(turn("refund_request")))
    return answer


def failed() -> AgentFailure:
    return AgentFailure(FailureCode.TASK_FAILED, "could not")


@pytest.mark.parametrize(("rule", "answers", "status", "following"), [
    ("all", (completed(), completed(), completed()), "success", 4),
    ("all", (completed(), failed(), completed()), "error", 3),
    ("all", (completed(), input_required("t-2"), completed()), "input_required", 3),
    ("all", (input_required("t-1"), failed(), completed()), "error", 3),
    ("any", (failed(), completed(), failed()), "success", 4),
    ("any", (failed(), input_required("t-2"), failed()), "input_required", 3),
    ("any", (failed(), failed(), failed()), "error", 3),
    ("first", (failed(), completed(), failed()), "success", 4),
])
async def test_the_rule_decides_the_turn_and_every_part_is_recorded(
        rule: str, answers: tuple[Any, ...], status: str, following: int) -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(flow_with(rule), agents)
    await at_capture(orchestrator)
    for name, answer in zip(("refund", "closing", "fallback"), answers, strict=True):
        agents.then(name, answer)
    result = await ask(orchestrator)
    assert (result["status"], result["next_flow_id"]) == (status, following)
    assert [part["agent"] for part in result["parts"]] == ["refund", "closing", "fallback"]
    assert [part["error"]["code"] if part["error"] else part["state"]
            for part in result["parts"]] == [
        "agent_task_failed" if isinstance(a, AgentFailure) else a.state for a in answers]
    assert result["response"]["agent"] == "refund+closing+fallback"
    found = await orchestrator.store.get("CALL-1")
    assert found is not None
    step = json.loads(found[1][-1])
    assert step["parts"] == result["parts"]  # partial failures are kept in the trail


async def test_data_of_each_agent_is_kept_under_its_name_for_branches() -> None:
    agents = ScriptedAgents().then("refund", completed(eligible=False)).then(
        "closing", completed(tier="gold"))
    flow = flow_with("all", "transitions:\n"
                     "  - {when: {refund.eligible: false, closing.tier: gold}, to: CLOSING}")
    orchestrator = orchestrator_of(flow, agents)
    await at_capture(orchestrator)
    result = await ask(orchestrator)
    assert result["response"]["data"] == {"refund": {"eligible": False},
                                          "closing": {"tier": "gold"}}
    assert result["next_flow_id"] == 5


async def test_a_task_left_open_by_one_agent_continues_on_that_agent_alone() -> None:
    agents = ScriptedAgents().then("closing", input_required("t-closing"))
    orchestrator = orchestrator_of(flow_with("all"), agents)
    await at_capture(orchestrator)
    assert (await ask(orchestrator))["status"] == "input_required"
    again = await ask(orchestrator)
    assert again["status"] == "success"
    assert [r.task_id for r in agents.to("closing")] == [None, "t-closing"]
    assert agents.to("refund")[-1].task_id is None  # its own task had completed: a new one
    ids = {r.message_id for r in agents.requests[-3:]}
    assert len(ids) == 3  # one messageId per agent


async def test_first_does_not_wait_for_the_slower_agents() -> None:
    agents = ScriptedAgents().then("refund", 5.0).then("fallback", 5.0)
    orchestrator = orchestrator_of(flow_with("first"), agents)
    await at_capture(orchestrator)
    result = await ask(orchestrator)  # the closing agent answers at once
    assert result["status"] == "success"
    assert [part["error"]["code"] if part["error"] else "ok" for part in result["parts"]] == [
        "agent_not_awaited", "ok", "agent_not_awaited"]


@pytest.mark.parametrize(("served", "problem"), [
    ("{agents: [refund, ghost]}", "intent 'refund_request' routes to unknown agent 'ghost'"),
    ("{agents: [refund, refund]}", "intent 'refund_request' names an agent twice"),
    ("{agents: [refund]}", "stages.2.intents.refund_request"),
    ("{agents: [refund, closing], succeed_when: most}", "succeed_when"),
])
def test_a_broken_parallel_route_is_refused(served: str, problem: str) -> None:
    text = five_stages().replace("{refund_request: refund}", f"{{refund_request: {served}}}")
    with pytest.raises(FlowConfigError) as error:
        parse_flow(text, "flow.yaml")
    assert problem in str(error.value)
