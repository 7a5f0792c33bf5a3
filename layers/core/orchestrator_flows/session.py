"""A call's session and its steps as plain typed values, and their flat encoding for the store.

The session is stored as a hash of small fields (rewritten whole on each commit: its size does not
grow with the call) and each step as one JSON string appended to a list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class TaskRef:
    """An agent task left open (input-required): the next turn at the stage continues it, over
    the same protocol version, even if configuration changed in between."""

    task_id: str
    context_id: str
    a2a_version: str
    stage_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "context_id": self.context_id,
            "a2a_version": self.a2a_version,
            "stage_id": self.stage_id,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskRef:
        return cls(raw["task_id"], raw["context_id"], raw["a2a_version"], int(raw["stage_id"]))


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

    def copy(self) -> Session:
        """A copy whose lists and maps can change without changing this one."""
        return replace(self, completed_flows=list(self.completed_flows),
                       open_tasks=dict(self.open_tasks))

    def to_fields(self) -> dict[str, str]:
        return {
            "account_id": self.account_id,
            "eci": self.eci,
            "context_id": self.context_id,
            "current_flow_id": str(self.current_flow_id),
            "completed_flows": json.dumps(self.completed_flows),
            "is_complete": "1" if self.is_complete else "0",
            "step_count": str(self.step_count),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "open_tasks": json.dumps({k: v.to_json() for k, v in self.open_tasks.items()}),
        }

    @classmethod
    def from_fields(cls, call_identify_id: str, fields: dict[str, str]) -> Session:
        return cls(
            call_identify_id=call_identify_id,
            account_id=fields["account_id"],
            eci=fields["eci"],
            context_id=fields["context_id"],
            current_flow_id=int(fields["current_flow_id"]),
            completed_flows=json.loads(fields["completed_flows"]),
            is_complete=fields["is_complete"] == "1",
            step_count=int(fields["step_count"]),
            created_at=fields["created_at"],
            updated_at=fields["updated_at"],
            open_tasks={
                k: TaskRef.from_json(v) for k, v in json.loads(fields["open_tasks"]).items()
            },
        )

    def to_public(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """The session state of the HTTP API (DESIGN §2)."""
        return {
            "call_identify_id": self.call_identify_id,
            "account_id": self.account_id,
            "eci": self.eci,
            "current_flow_id": self.current_flow_id,
            "completed_flows": list(self.completed_flows),
            "is_complete": self.is_complete,
            "steps": steps,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
