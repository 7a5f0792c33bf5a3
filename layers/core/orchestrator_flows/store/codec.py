"""How the store flattens what it keeps: a session into a hash of small fields (rewritten whole
on each commit: its size does not grow with the call), and an answer under an Idempotency-Key
into one reply record. Steps and answers arrive already encoded (`records.dump_json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator_flows.session import Session, TaskRef

FINGERPRINT_LENGTH = 64  # a sha256 in hex


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """`<1 if the answer completed the call, else 0><fingerprint of the turn><answer JSON>`.
    The claim script reads the first character (to send the trail with a completing reply);
    nothing else looks inside."""

    completed: bool
    fingerprint: str
    answer: str

    def encode(self) -> str:
        assert len(self.fingerprint) == FINGERPRINT_LENGTH
        return ("1" if self.completed else "0") + self.fingerprint + self.answer

    @classmethod
    def decode(cls, record: str) -> ReplyRecord:
        end = 1 + FINGERPRINT_LENGTH
        return cls(completes_call(record), record[1:end], record[end:])


def completes_call(record: str) -> bool:
    return record.startswith("1")


def session_fields(session: Session) -> dict[str, str]:
    return {
        "account_id": session.account_id,
        "eci": session.eci,
        "context_id": session.context_id,
        "current_flow_id": str(session.current_flow_id),
        "completed_flows": json.dumps(session.completed_flows),
        "is_complete": "1" if session.is_complete else "0",
        "step_count": str(session.step_count),
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "open_tasks": json.dumps({name: _task_fields(task)
                                  for name, task in session.open_tasks.items()}),
    }


def session_from_fields(call_identify_id: str, fields: dict[str, str]) -> Session:
    return Session(
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
        open_tasks={name: TaskRef(raw["task_id"], raw["context_id"], raw["a2a_version"],
                                  int(raw["stage_id"]))
                    for name, raw in json.loads(fields["open_tasks"]).items()},
    )


def _task_fields(task: TaskRef) -> dict[str, str | int]:
    return {"task_id": task.task_id, "context_id": task.context_id,
            "a2a_version": task.a2a_version, "stage_id": task.stage_id}
