"""A call's session as the engine works on it: where the call is, and the agent tasks it left
open. How it is stored is the store's business (`store/codec.py`); how it is shown, the
records' (`records.SessionState`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

# Why a call was handed to a person: the caller asked; a stage's attempts, or its visits, ran
# out; or a transition of the flow sends the outcome there.
HandoffReason = Literal["caller_request", "max_attempts", "max_visits", "flow"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class TaskRef:
    """An agent task left open (input-required): the next turn at the stage continues it, over
    the same protocol version, even if configuration changed in between."""

    task_id: str
    context_id: str
    a2a_version: str
    stage_id: int
    agent_version: str | None = None  # the version of the agent it runs on, if it has versions
    intent: str | None = None  # the stage's intent it serves (a follow-up continues it)


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff:
    """The call handed to a person (the terminal ESCALATION outcome): where to transfer it, why,
    and a masked summary for whoever takes it."""

    action: Literal["transfer"] = "transfer"
    reason: HandoffReason
    queue: str
    from_flow_id: int  # the stage the call was at
    summary: str


@dataclass
class Session:
    call_identify_id: str
    account_id: str
    eci: str
    context_id: str
    current_flow_id: int = 1
    completed_flows: list[int] = field(default_factory=list)
    is_complete: bool = False
    step_count: int = 0
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    open_tasks: dict[str, TaskRef] = field(default_factory=dict)  # agent name -> open task
    # agent name -> the version the call was given on its first turn to it (versioned agents)
    agent_versions: dict[str, str] = field(default_factory=dict)
    # stage id -> its failed or input-required turns in the call (for `max_attempts`)
    attempts: dict[int, int] = field(default_factory=dict)
    # stage id -> how often the call entered it (for `max_visits`); the first stage counts its
    # start
    visits: dict[int, int] = field(default_factory=dict)
    handoff: Handoff | None = None  # set once the call is escalated: it takes no more turns

    @property
    def is_over(self) -> bool:
        """Complete or escalated: the call takes no more turns, and its trail is whole."""
        return self.is_complete or self.handoff is not None

    def copy(self) -> Session:
        """A copy whose lists and maps can change without changing this one."""
        return Session(self.call_identify_id, self.account_id, self.eci, self.context_id,
                       self.current_flow_id, list(self.completed_flows), self.is_complete,
                       self.step_count, self.created_at, self.updated_at,
                       dict(self.open_tasks), dict(self.agent_versions), dict(self.attempts),
                       dict(self.visits), self.handoff)
