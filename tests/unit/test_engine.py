"""The flow rules of DESIGN §3 and §9, one behaviour per test, over the embedded store."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_flows.a2a import AgentReply
from orchestrator_flows.engine import MESSAGE_IDS, Orchestrator, _uuid5, message_id
from orchestrator_flows.errors import (
    AccountMismatch,
    AgentFailure,
    FailureCode,
    IntentNotAllowed,
    SessionComplete,
    StepInProgress,
    StoreUnavailable,
)
from orchestrator_flows.flow import Agent
from orchestrator_flows.records import to_json
from orchestrator_flows.session import Session
from orchestrator_flows.store import CallKeys
from orchestrator_flows.store.memory_backend import MemoryBackend
from tests.support.scripted import (
    STAGE_INTENTS,
    ScriptedAgents,
    completed,
    input_required,
    turn,
)


async def steps_of(orchestrator: Orchestrator, call: str = "CALL-1") -> list[dict[str, Any]]:
    found = await orchestrator.store.get(call)
    return [json.loads(step) for step in found[1]] if found else []


async def answered(orchestrator: Orchestrator, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A turn's answer as the API sends it."""
    sent: dict[str, Any] = to_json(await orchestrator.handle_turn(*args, **kwargs))
    return sent


async def advance_to(orchestrator: Orchestrator, stage: int, call: str = "CALL-1") -> None:
    for intent in STAGE_INTENTS[: stage - 1]:
        await orchestrator.handle_turn(turn(intent, call))


async def test_first_turn_creates_the_session_at_stage_one(orchestrator: Orchestrator) -> None:
    result = await answered(orchestrator, turn("greeting"))
    session, steps = await orchestrator.store.get("CALL-1") or (None, [])
    assert session is not None
    assert (session.account_id, session.eci, session.completed_flows) == ("ACC-1", "ECI-1", [1])
    assert result["intent_flow_id"] == 1
    assert len(steps) == 1


async def test_completed_task_advances_exactly_one_stage(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("greeting", completed())
    result = await answered(orchestrator, turn("greeting"))
    assert (result["status"], result["next_flow_id"], result["is_complete"]) == (
        "success", 2, False,
    )


async def test_plain_message_reply_completes_the_stage(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("greeting", completed(task_id=None))
    result = await answered(orchestrator, turn("greeting"))
    assert result["next_flow_id"] == 2


async def test_input_required_keeps_the_stage(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 2)
    agents.then("auth", input_required("auth-task"))
    result = await answered(orchestrator, turn("verify_identity"))
    assert (result["status"], result["intent_flow_id"], result["next_flow_id"]) == (
        "input_required", 2, 2,
    )


async def test_next_turn_continues_the_same_task_and_context(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 2)
    agents.then("auth", input_required("auth-task", context_id="agent-ctx"), completed())
    await orchestrator.handle_turn(turn("verify_identity"))
    result = await answered(orchestrator, turn("otp_verify", text="123456"))
    first, second = agents.to("auth")
    assert first.task_id is None
    assert (second.task_id, second.context_id) == ("auth-task", "agent-ctx")
    assert result["next_flow_id"] == 3


async def test_continuation_keeps_the_protocol_version_of_its_task(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 2)
    agents.then("auth", input_required("auth-task", version="0.3"), completed())
    await orchestrator.handle_turn(turn("verify_identity"))
    # Configuration changes in between: the agent is now pinned to 1.0.
    flow = orchestrator.flow
    orchestrator.flow = replace(
        flow, agents={**flow.agents, "auth": Agent("auth", flow.agents["auth"].url, "1.0")}
    )
    await orchestrator.handle_turn(turn("otp_verify"))
    assert agents.to("auth")[1].a2a_version == "0.3"


async def test_a_new_task_lets_the_client_choose_the_version(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await orchestrator.handle_turn(turn("greeting"))
    assert agents.to("greeting")[0].a2a_version is None


@pytest.mark.parametrize(
    "code", ["agent_timeout", "agent_unreachable", "agent_http_error", "agent_rpc_error",
             "agent_bad_response", "agent_task_failed", "agent_task_rejected"],
)
async def test_agent_failure_records_an_error_step_and_keeps_the_stage(
    orchestrator: Orchestrator, agents: ScriptedAgents, code: str
) -> None:
    agents.then("greeting", AgentFailure(FailureCode(code), "it broke"))
    result = await answered(orchestrator, turn("greeting"))
    steps = await steps_of(orchestrator)
    assert result["status"] == "error"
    assert result["response"]["error"]["code"] == code
    assert result["next_flow_id"] == 1
    assert [s["response_status"] for s in steps] == ["error"]


async def test_failed_task_is_not_continued(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 2)
    agents.then("auth", input_required("auth-task"),
                AgentFailure(FailureCode.TASK_FAILED, "no"), completed())
    for intent in ("verify_identity", "otp_verify", "otp_verify"):
        await orchestrator.handle_turn(turn(intent))
    assert [r.task_id for r in agents.to("auth")] == [None, "auth-task", None]


async def test_timed_out_task_is_continued_on_retry(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 2)
    agents.then(
        "auth", input_required("auth-task"), AgentFailure(FailureCode.TIMEOUT, "slow"), completed()
    )
    for intent in ("verify_identity", "otp_verify", "otp_verify"):
        await orchestrator.handle_turn(turn(intent))
    assert [r.task_id for r in agents.to("auth")] == [None, "auth-task", "auth-task"]


async def test_unknown_intent_goes_to_fallback_and_never_advances(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 2)
    result = await answered(orchestrator, turn("tell_me_a_joke"))
    assert agents.requests[-1].agent.name == "fallback"
    assert (result["status"], result["intent_flow_id"], result["next_flow_id"]) == (
        "success", 2, 2,
    )
    session, _ = await orchestrator.store.get("CALL-1") or (None, [])
    assert session is not None
    assert session.current_flow_id == 2


async def test_unknown_intent_on_a_new_call_cannot_skip_greeting(
    orchestrator: Orchestrator,
) -> None:
    result = await answered(orchestrator, turn("something_else"))
    assert result["next_flow_id"] == 1


async def test_intent_of_another_stage_is_refused_and_nothing_recorded(
    orchestrator: Orchestrator, agents: ScriptedAgents, backend: MemoryBackend
) -> None:
    await orchestrator.handle_turn(turn("greeting"))
    with pytest.raises(IntentNotAllowed) as refused:
        await orchestrator.handle_turn(turn("refund_request"))
    assert refused.value.details == {
        "current_flow_id": 2,
        "allowed_intents": ["authenticate", "otp_verify", "verify_identity"],
    }
    assert len(await steps_of(orchestrator)) == 1
    assert [r.agent.name for r in agents.requests] == ["greeting"]
    assert backend.pttl_ms(CallKeys.of("CALL-1").claim) == -2  # the claim was released


async def test_refused_first_turn_leaves_no_key(
    orchestrator: Orchestrator, backend: MemoryBackend
) -> None:
    with pytest.raises(IntentNotAllowed):
        await orchestrator.handle_turn(turn("end_call", call="NEW"))
    assert backend.keys_of("NEW") == []


async def test_completing_the_last_stage_completes_the_call(orchestrator: Orchestrator) -> None:
    await advance_to(orchestrator, 5)
    result = await answered(orchestrator, turn("end_call"))
    assert (result["is_complete"], result["next_flow_id"]) == (True, None)
    summary = result["session_summary"]
    assert summary["is_complete"] is True
    assert summary["completed_flows"] == [1, 2, 3, 4, 5]
    assert [s["intent"] for s in summary["steps"]] == list(STAGE_INTENTS)


async def test_summary_is_null_before_completion(orchestrator: Orchestrator) -> None:
    result = await answered(orchestrator, turn("greeting"))
    assert result["session_summary"] is None


async def test_turn_after_completion_is_refused(orchestrator: Orchestrator) -> None:
    await advance_to(orchestrator, 6)
    with pytest.raises(SessionComplete):
        await orchestrator.handle_turn(turn("feedback"))
    assert len(await steps_of(orchestrator)) == 5


async def test_other_account_is_refused_and_nothing_recorded(
    orchestrator: Orchestrator,
) -> None:
    await orchestrator.handle_turn(turn("greeting"))
    with pytest.raises(AccountMismatch):
        await orchestrator.handle_turn(turn("verify_identity", account="ACC-OTHER"))
    assert len(await steps_of(orchestrator)) == 1


async def test_second_step_while_one_is_in_flight_is_refused_with_retry_after(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    orchestrator.turn_wait_seconds = 0  # TURN_WAIT_SECONDS=0: a turn does not wait
    agents.then("greeting", 0.2)
    first = asyncio.create_task(orchestrator.handle_turn(turn("greeting")))
    await asyncio.sleep(0.05)
    with pytest.raises(StepInProgress) as busy:
        await orchestrator.handle_turn(turn("greeting"))
    await first
    assert busy.value.retry_after_seconds >= 1
    assert len(await steps_of(orchestrator)) == 1


async def test_every_step_is_in_the_trail_in_order_exactly_once(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("greeting", AgentFailure(FailureCode.TIMEOUT, "slow"))
    intents = ["greeting", "greeting", "chitchat", "verify_identity", "refund_request"]
    for intent in intents:
        await orchestrator.handle_turn(turn(intent))
    steps = await steps_of(orchestrator)
    assert [s["intent"] for s in steps] == intents
    assert [s["step_number"] for s in steps] == [1, 2, 3, 4, 5]


async def test_agents_receive_the_call_context_in_metadata(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 2)
    await orchestrator.handle_turn(turn("verify_identity", text="it's me"))
    request = agents.requests[-1]
    assert request.text == "it's me"
    assert request.metadata == {
        "call_identify_id": "CALL-1", "account_id": "ACC-1", "eci": "ECI-1",
        "intent": "verify_identity", "intent_flow_id": 2, "flow_label": "AUTHENTICATION",
    }


async def test_context_id_is_stable_for_the_whole_call(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    await advance_to(orchestrator, 6)
    contexts = {r.context_id for r in agents.requests}
    assert len(contexts) == 1
    await orchestrator.handle_turn(turn("greeting", call="CALL-2"))
    assert agents.requests[-1].context_id not in contexts


async def test_commit_after_the_claim_expired_is_refused_and_writes_nothing(
    orchestrator: Orchestrator, agents: ScriptedAgents, backend: MemoryBackend
) -> None:
    await orchestrator.handle_turn(turn("greeting"))
    orchestrator.store.lease_ms = 50
    agents.then("auth", 0.3)
    slow = asyncio.create_task(orchestrator.handle_turn(turn("verify_identity")))
    await asyncio.sleep(0.15)  # the slow turn's claim has lapsed; another turn runs meanwhile
    orchestrator.store.lease_ms = 20_000
    quick = await answered(orchestrator, turn("authenticate"))
    late = to_json(await slow)
    steps = await steps_of(orchestrator)
    assert quick["status"] == "success"
    assert (late["status"], late["response"]["error"]["code"]) == ("error", "claim_lost")
    assert [s["intent"] for s in steps] == ["greeting", "authenticate"]


async def test_cancelled_turn_releases_the_claim(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("greeting", 5.0)
    task = asyncio.create_task(orchestrator.handle_turn(turn("greeting")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await answered(orchestrator, turn("greeting"))
    assert result["status"] == "success"
    assert len(await steps_of(orchestrator)) == 1


async def test_step_records_agent_url_status_and_timestamp(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("greeting", AgentReply("hello", {"k": 1}, "completed", "t", "c", "1.0"))
    await orchestrator.handle_turn(turn("greeting", text="hey"))
    (step,) = await steps_of(orchestrator)
    assert step["a2a_agent_url"] == orchestrator.flow.agents["greeting"].url
    assert step["input_message"] == "hey"
    assert step["response_status"] == "success"
    assert step["response_data"]["data"] == {"k": 1}
    assert str(step["timestamp"]).endswith("Z")


async def test_an_answer_that_cannot_be_stored_is_a_bad_answer_and_the_call_goes_on(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    # An agent caller other than the A2A client (which refuses these itself) is held to the
    # same rule by the store: nothing that cannot be read back is written.
    agents.then("greeting", completed("fine", amount=float("nan")),
                completed("hi \ud800"), completed("hello"))
    first = await answered(orchestrator, turn("greeting"))
    second = await answered(orchestrator, turn("greeting"))
    third = await answered(orchestrator, turn("greeting"))
    assert [r["status"] for r in (first, second, third)] == ["error", "error", "success"]
    assert {first["response"]["error"]["code"], second["response"]["error"]["code"]} == {
        "agent_bad_response"}
    assert [s["response_status"] for s in await steps_of(orchestrator)] == [
        "error", "error", "success"]


async def test_a_commit_that_fails_releases_the_claim(
    orchestrator: Orchestrator, backend: MemoryBackend
) -> None:
    commit = backend.commit

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the connection died under the commit")

    backend.commit = refuse  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await orchestrator.handle_turn(turn("greeting"))
    assert backend.keys_of("CALL-1") == []  # no claim left behind
    backend.commit = commit  # type: ignore[method-assign]
    assert (await orchestrator.handle_turn(turn("greeting"))).status == "success"


async def test_a_keyed_turn_retried_after_its_claim_was_lost_carries_the_same_message_id(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    orchestrator.store.lease_ms = 50
    agents.then("greeting", 0.2)  # outlives its lease
    lost = await answered(orchestrator, turn("greeting"), idempotency_key="turn-1")
    orchestrator.store.lease_ms = 20_000
    again = await answered(orchestrator, turn("greeting"), idempotency_key="turn-1")
    assert (lost["response"]["error"]["code"], again["status"]) == ("claim_lost", "success")
    first, second = agents.to("greeting")
    assert first.message_id == second.message_id


async def test_a_turn_without_a_key_retried_after_a_failed_commit_carries_the_same_message_id(
    orchestrator: Orchestrator, agents: ScriptedAgents, backend: MemoryBackend
) -> None:
    await orchestrator.handle_turn(turn("greeting"))
    commit = backend.commit

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the connection died under the commit")

    backend.commit = refuse  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):  # answered 503
        await orchestrator.handle_turn(turn("verify_identity", text="I am Sam"))
    backend.commit = commit  # type: ignore[method-assign]
    await orchestrator.handle_turn(turn("verify_identity", text="I am Sam"))
    first, second = agents.to("auth")
    assert first.message_id == second.message_id


async def test_other_turns_carry_other_message_ids(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("auth", input_required(), input_required())
    await orchestrator.handle_turn(turn("greeting"))
    await orchestrator.handle_turn(turn("verify_identity", text="I am Sam"))
    await orchestrator.handle_turn(turn("verify_identity", text="I am Sam"))  # the next step
    await orchestrator.handle_turn(turn("greeting", call="CALL-2"))  # another call
    await orchestrator.handle_turn(turn("greeting", call="CALL-3"), idempotency_key="k")
    await orchestrator.handle_turn(turn("greeting", call="CALL-4"), idempotency_key="k")
    ids = [request.message_id for request in agents.requests]
    assert len(set(ids)) == len(ids) == 6


def test_a_turn_without_a_key_is_another_message_when_it_says_something_else() -> None:
    session = Session(call_identify_id="CALL-1", account_id="ACC-1", eci="ECI-1",
                      context_id="ctx")
    refund_50 = turn("process_refund", text="refund 50")
    assert message_id(refund_50, None, session) == message_id(refund_50, None, session)
    assert message_id(refund_50, None, session) != message_id(
        turn("process_refund", text="refund 20"), None, session)


async def test_a_turn_cancelled_while_the_breaker_is_looked_at_releases_its_claim(
    orchestrator: Orchestrator, backend: MemoryBackend
) -> None:
    breakers = orchestrator.breakers.store
    peek = breakers.peek
    looked_at = asyncio.Event()

    async def slow_peek(agent: str, cooldown_ms: int) -> Any:
        looked_at.set()
        await asyncio.sleep(5)  # the claim is long taken by now
        return await peek(agent, cooldown_ms)

    breakers.peek = slow_peek  # type: ignore[method-assign]
    task = asyncio.create_task(orchestrator.handle_turn(turn("greeting")))
    await looked_at.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.keys_of("CALL-1") == []  # the claim went with the turn


async def test_what_is_kept_of_an_answer_is_bounded(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("greeting", completed("word " * 10_000, blob="x" * 100_000))
    answer = await answered(orchestrator, turn("greeting"))
    (step,) = await steps_of(orchestrator)
    for response in (answer["response"], step["response_data"]):
        assert 16_000 < len(response["text"]) <= 16_385
        assert response["text"].endswith("…")
        assert list(response["data"]) == ["omitted"]


async def test_a_task_whose_uuid_starts_with_digits_is_continued_during_authentication(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    # One UUID in 43 starts with eight decimal digits; that is an id, not a one-time code.
    task = "12345678-fa53-40cc-835e-a36b5078fe68"
    agents.then("auth", input_required(task_id=task, context_id="87654321-0a1b-4c2d-8e3f-00"))
    await advance_to(orchestrator, 2)
    asked = await answered(orchestrator, turn("verify_identity", text="I am Sam"))
    await orchestrator.handle_turn(turn("otp_verify", text="482913"))
    assert asked["response"]["task_id"] == task
    assert agents.to("auth")[-1].task_id == task


async def test_a_context_id_of_the_agents_own_is_masked(
    orchestrator: Orchestrator, agents: ScriptedAgents
) -> None:
    agents.then("auth", input_required(context_id="ctx 4111 1111 1111 1111"))
    await advance_to(orchestrator, 2)
    asked = await answered(orchestrator, turn("verify_identity", text="I am Sam"))
    assert asked["response"]["context_id"] == "ctx [CARD]"
    assert (await steps_of(orchestrator))[-1]["response_data"]["context_id"] == "ctx [CARD]"


def test_the_calls_own_context_id_echoed_back_is_kept_as_it_is() -> None:
    # Ours, so not scanned; whatever it looked like, it is the one the session holds.
    from orchestrator_flows.engine import _masked
    from orchestrator_flows.masking import Masker
    from orchestrator_flows.records import AgentResponse

    ours = "ctx-4111 1111 1111 1111"
    response = AgentResponse(agent="auth", text="call 4111 1111 1111 1111", data={},
                             state="completed", task_id="t-1", context_id=ours, error=None,
                             latency_ms=1.0, attempts=())
    kept = _masked(response, Masker(), "GREETING", ours)
    assert (kept.context_id, kept.text) == (ours, "call [CARD]")
    other = _masked(response, Masker(), "GREETING", "ctx-other")
    assert other.context_id == "ctx-[CARD]"


@given(st.text())
def test_a_message_id_is_the_standard_uuid5_of_its_name(name: str) -> None:
    import uuid

    assert _uuid5(name) == str(uuid.uuid5(MESSAGE_IDS, name))
