"""A scripted agent caller for engine and API tests without the network: each agent answers
from a queue of replies or failures, and every request it receives is kept."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass, field

from orchestrator_flows.a2a import AgentReply, AgentRequest
from orchestrator_flows.engine import Turn
from orchestrator_flows.errors import AgentFailure

Answer = AgentReply | AgentFailure | float  # a float: wait that long, then answer completed


def completed(text: str = "done", task_id: str | None = "task-1", **data: object) -> AgentReply:
    return AgentReply(text, dict(data), "completed", task_id, None, "1.0")


def input_required(task_id: str = "task-1", context_id: str | None = None,
                   version: str = "1.0") -> AgentReply:
    return AgentReply("need more", {}, "input-required", task_id, context_id, version)


@dataclass
class ScriptedAgents:
    script: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[AgentRequest] = field(default_factory=list)

    def then(self, agent: str, *answers: Answer) -> ScriptedAgents:
        self.script[agent].extend(answers)
        return self

    def to(self, agent: str) -> list[AgentRequest]:
        return [r for r in self.requests if r.agent.name == agent]

    async def send(self, request: AgentRequest) -> AgentReply:
        self.requests.append(request)
        queue = self.script.get(request.agent.name)
        answer: Answer = queue.popleft() if queue else completed(f"{request.agent.name} done")
        if isinstance(answer, float):
            await asyncio.sleep(answer)
            answer = completed(f"{request.agent.name} done after a wait")
        if isinstance(answer, AgentFailure):
            raise answer
        return AgentReply(
            answer.text, answer.data, answer.state, answer.task_id,
            answer.context_id or request.context_id, answer.a2a_version,
        )


def turn(intent: str, call: str = "CALL-1", account: str = "ACC-1", text: str = "hi") -> Turn:
    return Turn(call, account, "ECI-1", text, intent)


def body(intent: str, call: str = "CALL-1", account: str = "ACC-1", text: str = "hi") -> dict[
    str, str
]:
    return {"call_identify_id": call, "account_id": account, "eci": "ECI-1",
            "input_message": text, "intent": intent}


# Intents that complete each stage of the default flow, in order.
STAGE_INTENTS = ("greeting", "verify_identity", "refund_request", "process_refund", "end_call")
