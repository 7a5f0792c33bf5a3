"""Attempts, escalation to a person and transitions (the flows issue, items 1 and 2): what each
does to a call, table by table, over the embedded store and scripted agents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator_flows.breaker import Breakers
from orchestrator_flows.breaker.memory_store import MemoryBreakerStore
from orchestrator_flows.engine import Orchestrator
from orchestrator_flows.errors import AgentFailure, FailureCode, FlowConfigError, SessionEscalated
from orchestrator_flows.flow import Flow
from orchestrator_flows.flow_file import default_flow, parse_flow
from orchestrator_flows.observer import SilentObserver
from orchestrator_flows.records import to_json
from orchestrator_flows.store import SessionStore
from orchestrator_flows.store.memory_backend import MemoryBackend
from tests.support.scripted import STAGE_INTENTS, ScriptedAgents, completed, input_required, turn

STAGES = ("GREETING", "AUTHENTICATION", "INTENT_CAPTURE", "FULFILLMENT", "CLOSING")
AGENTS = ("greeting", "auth", "refund", "refund", "closing")


def five_stages(extra: dict[str, str] | None = None, head: str = "") -> str:
    """The default flow's shape, one intent a stage, with `extra` YAML lines per stage name."""
    extra = extra or {}
    lines = ["agents:"]
    lines += [f"  {name}: {{url: 'http://127.0.0.1:9/{name}'}}"
              for name in ("greeting", "auth", "refund", "closing", "fallback")]
    lines += ["fallback_agent: fallback", head, "stages:"]
    for index, (name, intent, agent) in enumerate(zip(STAGES, STAGE_INTENTS, AGENTS,
                                                      strict=True)):
        lines += [f"  - id: {index + 1}", f"    name: {name}",
                  f"    intents: {{{intent}: {agent}}}"]
        lines += [f"    {line}" for line in extra.get(name, "").splitlines() if line]
    return "\n".join(lines) + "\n"


def orchestrator_of(flow: Flow, agents: ScriptedAgents) -> Orchestrator:
    store = SessionStore(backend=MemoryBackend(), ttl_seconds=3600, lease_seconds=20)
    return Orchestrator(flow=flow, store=store, agents=agents,
                        breakers=Breakers(store=MemoryBreakerStore(), probe_seconds=1.0),
                        observer=SilentObserver(), max_steps=200)


async def say(orchestrator: Orchestrator, intent: str, text: str = "hi",
              call: str = "CALL-1") -> dict[str, Any]:
    answer: dict[str, Any] = to_json(await orchestrator.handle_turn(turn(intent, call,
                                                                          text=text)))
    return answer


async def steps_of(orchestrator: Orchestrator, call: str = "CALL-1") -> list[dict[str, Any]]:
    found = await orchestrator.store.get(call)
    assert found is not None
    return [json.loads(step) for step in found[1]]


async def reach(orchestrator: Orchestrator, stage: int) -> None:
    for intent in STAGE_INTENTS[:stage - 1]:
        assert (await say(orchestrator, intent))["status"] == "success"


def failure() -> AgentFailure:
    return AgentFailure(FailureCode.TIMEOUT, "no answer in time")


@pytest.mark.parametrize("stage", range(1, 6))
@pytest.mark.parametrize("kind", ["failed", "input_required"])
async def test_every_stage_escalates_when_its_attempts_run_out(stage: int, kind: str) -> None:
    name = STAGES[stage - 1]
    flow = parse_flow(five_stages({name: "max_attempts: 3\nqueue: team_" + name.lower()},
                                  head="escalation: {queue: front_desk}"), "flow.yaml")
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(flow, agents)
    await reach(orchestrator, stage)
    agent = AGENTS[stage - 1]
    intent = STAGE_INTENTS[stage - 1]
    if kind == "input_required":
        # The agent's first question opens its task and is no attempt; asking again is.
        agents.then(agent, input_required())
        assert (await say(orchestrator, intent))["status"] == "input_required"
    answer = failure() if kind == "failed" else input_required()
    agents.then(agent, answer, answer, answer)
    first, second = [await say(orchestrator, intent) for _ in range(2)]
    assert [first["handoff"], second["handoff"]] == [None, None]
    assert first["next_flow_id"] == second["next_flow_id"] == stage
    third = await say(orchestrator, intent, text="this is the third time")
    assert (third["status"], third["next_flow_id"], third["is_complete"]) == (
        "escalated", None, False)
    handoff = third["handoff"]
    assert (handoff["action"], handoff["reason"], handoff["queue"], handoff["from_flow_id"]) == (
        "transfer", "max_attempts", "team_" + name.lower(), stage)
    assert f"Unsuccessful attempts at {name}: 3." in handoff["summary"]
    assert "this is the third time" in handoff["summary"]
    # The third agent answer is still recorded, and the whole call comes with the handoff.
    assert third["response"]["agent"] == agent
    assert third["session_summary"]["handoff"] == handoff
    steps = await steps_of(orchestrator)
    assert [s["response_status"] for s in steps[-3:]] == [
        "error" if kind == "failed" else "input_required"] * 2 + ["escalated"]
    assert steps[-1]["handoff"] == handoff
    # Later turns are refused, nothing written, no agent called.
    called = len(agents.requests)
    with pytest.raises(SessionEscalated) as refused:
        await say(orchestrator, intent)
    assert refused.value.details == {"queue": "team_" + name.lower(), "reason": "max_attempts"}
    assert (len(agents.requests), len(await steps_of(orchestrator))) == (called, len(steps))


@pytest.mark.parametrize("stage", range(1, 6))
async def test_the_escalate_intent_hands_over_at_every_stage_without_an_agent(stage: int) -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    await reach(orchestrator, stage)
    called = len(agents.requests)
    answer = await say(orchestrator, "escalate", text="my card is 4111 1111 1111 1111")
    assert len(agents.requests) == called
    assert (answer["status"], answer["response"], answer["next_flow_id"]) == (
        "escalated", None, None)
    assert answer["intent_flow_id"] == stage
    handoff = answer["handoff"]
    assert (handoff["reason"], handoff["queue"], handoff["from_flow_id"]) == (
        "caller_request", "customer_care", stage)
    # The summary is masked like everything stored.
    assert "4111" not in handoff["summary"]
    assert "[CARD]" in handoff["summary"]
    completed_names = ", ".join(STAGES[:stage - 1]) or "none"
    assert f"Completed: {completed_names}." in handoff["summary"]
    last = (await steps_of(orchestrator))[-1]
    assert (last["agent"], last["a2a_agent_url"], last["response_data"]) == (None, None, None)
    assert last["handoff"] == handoff
    assert len(answer["session_summary"]["steps"]) == stage


@pytest.mark.parametrize(("said", "escalates"), [
    ("I want to speak to a person please", True),
    ("Can I TALK TO A HUMAN?", True),
    ("get me a real-person now", True),
    ("Quiero hablar con una persona", True),
    ("¿Puedo hablar con un agente?", True),
    ("necesito un AGENTE HUMANO", True),
    ("the agent said my refund is late", False),
    ("I am a person who wants a refund", False),
    ("hablar conmigo", False),
])
async def test_phrases_in_the_callers_words_ask_for_a_person(said: str, escalates: bool) -> None:
    orchestrator = orchestrator_of(default_flow(), ScriptedAgents())
    answer = await say(orchestrator, "greeting", text=said)
    assert (answer["status"] == "escalated") is escalates
    assert (answer["handoff"] is not None) is escalates


async def test_without_max_attempts_a_stage_is_retried_as_before() -> None:
    # The agent's own failures (they do not open its circuit).
    agents = ScriptedAgents().then("greeting", *[AgentFailure(FailureCode.TASK_FAILED, "no")] * 12)
    orchestrator = orchestrator_of(default_flow(), agents)
    for _ in range(12):
        answer = await say(orchestrator, "greeting")
        assert (answer["status"], answer["next_flow_id"], answer["handoff"]) == ("error", 1, None)
    assert (await say(orchestrator, "greeting"))["next_flow_id"] == 2


async def test_attempts_count_per_stage_for_the_whole_call() -> None:
    """A completed turn does not reset the count: two attempts, a success, two more escalate
    at a cap of 4 (a loop back to the stage cannot earn it fresh attempts)."""
    flow = parse_flow(five_stages({"GREETING": "max_attempts: 4\ntransitions:\n"
                                   "  - {outcome: completed, when: {again: true}, to: GREETING}\n"
                                   "max_visits: 3"}), "flow.yaml")
    agents = ScriptedAgents().then("greeting", failure(), failure(), completed(again=True),
                                   failure(), failure())
    orchestrator = orchestrator_of(flow, agents)
    statuses = [(await say(orchestrator, "greeting"))["status"] for _ in range(5)]
    assert statuses == ["error", "error", "success", "error", "escalated"]


async def test_a_fallback_turn_counts_as_an_attempt_but_never_moves_the_call() -> None:
    flow = parse_flow(five_stages({"GREETING": "max_attempts: 2"}), "flow.yaml")
    agents = ScriptedAgents().then("fallback", failure(), completed())
    orchestrator = orchestrator_of(flow, agents)
    first = await say(orchestrator, "say_what")
    assert (first["status"], first["next_flow_id"]) == ("error", 1)
    assert (await say(orchestrator, "say_what"))["next_flow_id"] == 1  # completed: no attempt
    agents.then("fallback", failure())
    assert (await say(orchestrator, "say_what"))["handoff"]["reason"] == "max_attempts"


async def test_a_first_question_is_no_attempt_and_each_question_again_is_one() -> None:
    flow = parse_flow(five_stages({"AUTHENTICATION": "max_attempts: 2"}), "flow.yaml")
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(flow, agents)
    await reach(orchestrator, 2)
    agents.then("auth", input_required("t-1"), completed())
    assert (await say(orchestrator, "verify_identity"))["status"] == "input_required"
    assert (await say(orchestrator, "verify_identity"))["next_flow_id"] == 3  # answered both
    other = "CALL-2"
    await reach_call(orchestrator, 2, other)
    agents.then("auth", input_required("t-2"), input_required("t-2"), input_required("t-2"))
    statuses = [(await say(orchestrator, "verify_identity", call=other))["status"]
                for _ in range(3)]
    assert statuses == ["input_required", "input_required", "escalated"]


async def reach_call(orchestrator: Orchestrator, stage: int, call: str) -> None:
    for intent in STAGE_INTENTS[:stage - 1]:
        await say(orchestrator, intent, call=call)


BRANCHING = five_stages({
    "INTENT_CAPTURE": """transitions:
  - {outcome: completed, when: {eligible: false}, to: CLOSING}
  - {outcome: completed, when: {case.kind: {in: [fraud, legal]}}, to: ESCALATION, queue: risk}
  - {outcome: completed, when: {callback: {exists: true}}, to: END}
  - {outcome: failed, to: ESCALATION}
  - {outcome: input_required, when: {retry: true}, to: INTENT_CAPTURE}""",
    "FULFILLMENT": """max_attempts: 2
transitions:
  - {outcome: failed, to: INTENT_CAPTURE}""",
}, head="escalation: {queue: front_desk}")


@pytest.mark.parametrize(("answer", "expected"), [
    (completed(), ("success", 4, None)),
    (completed(eligible=True), ("success", 4, None)),
    (completed(eligible=False), ("success", 5, None)),
    (completed(eligible="false"), ("success", 4, None)),  # a string is not a boolean
    (completed(eligible=0), ("success", 4, None)),  # nor is 0 false
    (completed(case={"kind": "fraud"}), ("escalated", None, ("flow", "risk"))),
    (completed(case={"kind": "legal"}), ("escalated", None, ("flow", "risk"))),
    (completed(case={"kind": "billing"}), ("success", 4, None)),
    (completed(case="fraud"), ("success", 4, None)),
    (completed(callback=None), ("success", None, None)),
    (failure(), ("escalated", None, ("flow", "front_desk"))),
    (input_required(), ("input_required", 3, None)),
    (AgentFailure(FailureCode.TASK_FAILED, "no"), ("escalated", None, ("flow", "front_desk"))),
])
async def test_branches_on_outcome_and_data(answer: Any, expected: tuple[Any, ...]) -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(parse_flow(BRANCHING, "flow.yaml"), agents)
    await reach(orchestrator, 3)
    agents.then("refund", answer)
    result = await say(orchestrator, "refund_request")
    handoff = result["handoff"]
    assert (result["status"], result["next_flow_id"],
            handoff and (handoff["reason"], handoff["queue"])) == expected
    state = (await orchestrator.store.get("CALL-1"))
    assert state is not None
    session = state[0]
    if expected[1] == 5:
        assert session.completed_flows == [1, 2, 3]  # FULFILLMENT skipped
    if expected == ("success", None, None):
        assert session.is_complete
        assert result["is_complete"]
        assert result["session_summary"]["completed_flows"] == [1, 2, 3]


async def test_a_failed_fulfillment_goes_back_until_its_attempts_run_out() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(parse_flow(BRANCHING, "flow.yaml"), agents)
    await reach(orchestrator, 4)
    agents.then("refund", failure())
    back = await say(orchestrator, "process_refund")
    assert (back["status"], back["next_flow_id"]) == ("error", 3)
    assert (await say(orchestrator, "refund_request"))["next_flow_id"] == 4
    agents.then("refund", failure())
    last = await say(orchestrator, "process_refund")
    assert (last["status"], last["handoff"]["reason"]) == ("escalated", "max_attempts")
    session = (await orchestrator.store.get("CALL-1") or (None,))[0]
    assert session is not None
    assert (session.attempts, session.completed_flows) == ({4: 2}, [1, 2, 3, 3])


async def test_a_task_left_open_is_not_continued_after_the_call_moves_away() -> None:
    flow = parse_flow(five_stages({"FULFILLMENT": "transitions:\n  - "
                                   "{outcome: input_required, to: INTENT_CAPTURE}",
                                   "INTENT_CAPTURE": "max_visits: 3"}), "flow.yaml")
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(flow, agents)
    await reach(orchestrator, 4)
    agents.then("refund", input_required("task-open"))
    assert (await say(orchestrator, "process_refund"))["next_flow_id"] == 3
    await say(orchestrator, "refund_request")
    await say(orchestrator, "process_refund")
    assert [r.task_id for r in agents.to("refund")][-2:] == [None, None]


async def test_max_visits_caps_a_loop_on_completed_answers() -> None:
    flow = parse_flow(five_stages({
        "FULFILLMENT": "transitions:\n"
                       "  - {outcome: completed, when: {more: true}, to: INTENT_CAPTURE}",
        "INTENT_CAPTURE": "max_visits: 2\nqueue: loops"}), "flow.yaml")
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(flow, agents)
    await reach(orchestrator, 4)
    agents.then("refund", completed(more=True))
    assert (await say(orchestrator, "process_refund"))["next_flow_id"] == 3  # visit 2
    await say(orchestrator, "refund_request")
    agents.then("refund", completed(more=True))
    third = await say(orchestrator, "process_refund")  # a third visit: over the cap
    assert (third["status"], third["handoff"]["reason"], third["handoff"]["queue"]) == (
        "escalated", "max_visits", "loops")
    assert third["handoff"]["from_flow_id"] == 4


async def test_an_escalated_turn_is_replayed_under_its_idempotency_key() -> None:
    agents = ScriptedAgents()
    orchestrator = orchestrator_of(default_flow(), agents)
    first = to_json(await orchestrator.handle_turn(turn("escalate"), "key-1"))
    again = to_json(await orchestrator.handle_turn(turn("escalate"), "key-1"))
    assert again == first
    assert first["session_summary"]["handoff"] == first["handoff"]


# The flow file's checks: each problem at its line, in the file's words.
@pytest.mark.parametrize(("extra", "line", "problem"), [
    ({"AUTHENTICATION": "transitions:\n  - {to: FULFILLMENT}"}, 18,
     "stage INTENT_CAPTURE cannot be reached from GREETING"),
    ({"INTENT_CAPTURE": "transitions:\n  - {outcome: failed, to: NOWHERE}"}, 20,
     "stage INTENT_CAPTURE: transition to 'NOWHERE', which is not a stage, END or ESCALATION"),
    ({"FULFILLMENT": "transitions:\n  - {outcome: failed, to: INTENT_CAPTURE}"}, 23,
     "stage FULFILLMENT: the loop INTENT_CAPTURE → FULFILLMENT → INTENT_CAPTURE has no cap"),
    ({"CLOSING": "transitions:\n  - {when: {again: true}, to: CLOSING}"}, 26,
     "stage CLOSING: the loop CLOSING → CLOSING has no cap"),
    ({"FULFILLMENT": "max_attempts: 2\ntransitions:\n"
                     "  - {outcome: input_required, to: INTENT_CAPTURE}"}, 24,
     "the loop INTENT_CAPTURE → FULFILLMENT → INTENT_CAPTURE has no cap"),
    ({"GREETING": "transitions:\n  - {to: END}\n  - {to: CLOSING}"}, 15,
     "stage GREETING: this transition can never match: one before it takes every completed"),
    ({"FULFILLMENT": "transitions:\n  - {when: {more: true}, to: GREETING}"}, 23,
     "the loop GREETING → AUTHENTICATION → INTENT_CAPTURE → FULFILLMENT → GREETING has no cap"),
    ({"GREETING": "transitions:\n  - {to: END}"}, 15,
     "stage AUTHENTICATION cannot be reached from GREETING"),
    ({"GREETING": "transitions:\n  - {to: END}\n  - {to: CLOSING}"}, 16,
     "stage AUTHENTICATION cannot be reached from GREETING"),
    ({"CLOSING": "transitions:\n  - {outcome: input_required, to: END, queue: q}"}, 26,
     "stage CLOSING: a queue is only for a transition to ESCALATION"),
    ({"CLOSING": "transitions:\n  - {on: failed, to: END}"}, 26,
     "a key `on` (or yes) is read by YAML as true: write `outcome:`"),
    ({"CLOSING": "transitions:\n  - {outcome: finished, to: END}"}, 26,
     "stages.4.transitions.0.outcome"),
    ({"CLOSING": "transitions:\n  - {when: {a..b: 1}, to: END}"}, 26,
     "when: 'a..b' is not a dotted path into the agent's data"),
    ({"CLOSING": "transitions:\n  - {when: {a: {in: 3}}, to: END}"}, 26,
     "when.a.in: a list of plain values"),
    ({"CLOSING": "transitions:\n  - {when: {a: {above: 3}}, to: END}"}, 26,
     "when.a: a value, or one of {equals: v}, {in: [v, …]}, {exists: true|false}"),
    ({"CLOSING": "transitions:\n  - {when: {a: {exists: 1}}, to: END}"}, 26,
     "when.a.exists: true or false"),
    ({"CLOSING": "max_attempts: 0"}, 25, "stages.4.max_attempts"),
    ({"CLOSING": "max_visits: 101"}, 25, "stages.4.max_visits"),
])
def test_a_flow_file_with_a_broken_graph_is_refused_at_its_line(
        extra: dict[str, str], line: int, problem: str) -> None:
    with pytest.raises(FlowConfigError) as error:
        parse_flow(five_stages(extra), "flow.yaml")
    assert any(found.startswith(f"flow.yaml:{line}: ") and problem in found
               for found in str(error.value).splitlines()), str(error.value)


@pytest.mark.parametrize("extra", [
    {"FULFILLMENT": "max_attempts: 3\ntransitions:\n  - {outcome: failed, to: INTENT_CAPTURE}"},
    {"FULFILLMENT": "transitions:\n  - {outcome: failed, to: INTENT_CAPTURE}",
     "INTENT_CAPTURE": "max_visits: 2"},
    {"CLOSING": "max_visits: 1\ntransitions:\n  - {when: {again: true}, to: CLOSING}"},
    {"AUTHENTICATION": "transitions:\n  - {outcome: failed, to: AUTHENTICATION}"},  # a stay
    {"GREETING": "transitions:\n  - {when: {known: true}, to: INTENT_CAPTURE}"},
    {"INTENT_CAPTURE": "transitions:\n  - {when: {eligible: false}, to: CLOSING}\n"
                       "  - {outcome: failed, to: ESCALATION, queue: 'arn:aws:connect:q/1'}"},
])
def test_a_capped_or_acyclic_graph_loads(extra: dict[str, str]) -> None:
    assert parse_flow(five_stages(extra), "flow.yaml").stages[0].name == "GREETING"


@pytest.mark.parametrize(("head", "extra", "problem"), [
    ("escalation: {intents: [greeting]}", {},
     "escalation.intents: 'greeting' is already an intent of stage 1"),
    ("escalation: {intents: ['bad intent']}", {}, "is not a valid intent name"),
    ("escalation: {phrases: {English: [agent]}}", {}, "'English' is not a locale"),
    ("escalation: {queue: 'two words'}", {}, "escalation.queue"),
    ("", {"CLOSING": "name: END"}, "duplicate key 'name'"),
])
def test_escalation_settings_are_checked(head: str, extra: dict[str, str], problem: str) -> None:
    with pytest.raises(FlowConfigError) as error:
        parse_flow(five_stages(extra, head=head), "flow.yaml")
    assert problem in str(error.value)


def test_end_and_escalation_are_not_stage_names_and_names_are_unique() -> None:
    text = five_stages().replace("name: CLOSING", "name: END").replace(
        "name: FULFILLMENT", "name: GREETING")
    with pytest.raises(FlowConfigError) as error:
        parse_flow(text, "flow.yaml")
    assert str(error.value).splitlines() == [
        "flow.yaml:20: duplicate stage name 'GREETING': already stage 1",
        "flow.yaml:23: END names the end of a call, not a stage",
    ]


def test_a_flow_that_routes_an_escalate_intent_keeps_it() -> None:
    """A flow file written before escalation existed may route `escalate` to an agent: it
    still loads, and the intent stays the stage's (no default escalation intent)."""
    flow = parse_flow(five_stages().replace("{greeting: greeting}",
                                            "{greeting: greeting, escalate: greeting}"), "f")
    assert flow.escalation.intents == frozenset()
    assert flow.route("escalate", 1).agent.name == "greeting"
    with pytest.raises(FlowConfigError):  # said outright, it is refused
        parse_flow(five_stages(head="escalation: {intents: [greeting]}"), "f")


@pytest.mark.parametrize(("said", "asks"), [
    ("𝐓𝐀𝐋𝐊 𝐓𝐎 𝐀 𝐇𝐔𝐌𝐀𝐍", True),
    ("ＴＡＬＫ ＴＯ Ａ ＨＵＭＡＮ", True),
    ("ﷺ" * 32_000, False),
    ("x " * 5_000 + "talk to a human", False),  # past what is scanned
])
def test_phrases_are_compared_on_unfolded_bounded_text(said: str, asks: bool) -> None:
    assert default_flow().escalation.asked_for("greeting", said) is asks


def test_the_default_flow_asks_in_english_and_spanish_and_caps_nothing() -> None:
    flow = default_flow()
    assert set(flow.escalation.phrases) == {"en", "es"}
    assert (flow.escalation.intents, flow.escalation.queue) == (
        frozenset({"escalate"}), "customer_care")
    assert all(stage.max_attempts is None and not stage.transitions for stage in flow.stages)
