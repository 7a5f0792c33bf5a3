"""What the engine asks of an agent, and what an agent's answer is reduced to (DESIGN §6)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from orchestrator_flows.flow import Agent
from orchestrator_flows.records import Attempt

OK_STATES = frozenset({"completed"})
WAITING_STATES = frozenset({"input-required", "auth-required"})


@dataclass(frozen=True, slots=True)
class AgentRequest:
    agent: Agent
    text: str
    metadata: dict[str, Any]
    context_id: str
    task_id: str | None = None
    a2a_version: str | None = None  # pinned by an open task; else flow file, then agent card
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # A shorter deadline than the client's (a classifier agent's; the agent after it has what
    # is left of the step's): None, the client's own.
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class AgentReply:
    """An agent's usable answer: a finished task or message, or a task waiting for the caller."""

    text: str
    data: dict[str, Any]
    state: str  # completed | input-required | auth-required
    task_id: str | None
    context_id: str | None
    a2a_version: str
    attempts: tuple[Attempt, ...] = ()  # each try, in order

    def tried(self, attempts: tuple[Attempt, ...]) -> AgentReply:
        """This reply with each try's outcome (built directly: `dataclasses.replace` costs a
        look at every field's definition on each step)."""
        return AgentReply(self.text, self.data, self.state, self.task_id, self.context_id,
                          self.a2a_version, attempts)

    @property
    def completed(self) -> bool:
        return self.state in OK_STATES
