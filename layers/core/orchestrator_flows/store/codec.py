"""How the store flattens what it keeps: a session into one JSON field of the state hash
(rewritten whole on each commit: its size does not grow with the call), and an answer under an
Idempotency-Key into one reply record. Steps and answers arrive already encoded
(`records.dump_json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator_flows.session import Handoff, Session, TaskRef

FINGERPRINT_LENGTH = 64  # a sha256 in hex
SESSION_FIELD = "session"  # the state hash: the session as JSON, and last_commit (the scripts')
# One encoder for every commit: `json.dumps` with options builds a new one each call.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """`<1 if the answer ended the call (complete or escalated), else 0><fingerprint of the
    turn><answer JSON>`. The claim script reads the first character (to send the trail with
    such a reply); nothing else looks inside."""

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
    """The session as the state hash keeps it: one JSON field (one argument to encode and one
    field for Redis to write and read back, instead of one per attribute)."""
    return {SESSION_FIELD: _compact_json({
        "account_id": session.account_id,
        "eci": session.eci,
        "context_id": session.context_id,
        "current_flow_id": session.current_flow_id,
        "completed_flows": session.completed_flows,
        "is_complete": session.is_complete,
        "step_count": session.step_count,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "open_tasks": {name: _task_fields(task) for name, task in session.open_tasks.items()},
        **({"agent_versions": session.agent_versions} if session.agent_versions else {}),
        # Absent while empty: a call that never retried or escalated keeps today's size.
        **({"attempts": session.attempts} if session.attempts else {}),
        **({"visits": session.visits} if session.visits else {}),
        **({"handoff": _handoff_fields(session.handoff)} if session.handoff else {}),
    })}


def session_from_fields(call_identify_id: str, fields: dict[str, str]) -> Session:
    if SESSION_FIELD in fields:
        kept = json.loads(fields[SESSION_FIELD])
    else:  # as versions before 0.2 kept it, one field per attribute (for a call's last hour)
        kept = {**fields, "completed_flows": json.loads(fields["completed_flows"]),
                "is_complete": fields["is_complete"] == "1",
                "open_tasks": json.loads(fields["open_tasks"])}
    return Session(
        call_identify_id=call_identify_id,
        account_id=kept["account_id"],
        eci=kept["eci"],
        context_id=kept["context_id"],
        current_flow_id=int(kept["current_flow_id"]),
        completed_flows=list(kept["completed_flows"]),
        is_complete=bool(kept["is_complete"]),
        step_count=int(kept["step_count"]),
        created_at=kept["created_at"],
        updated_at=kept["updated_at"],
        open_tasks={name: TaskRef(raw["task_id"], raw["context_id"], raw["a2a_version"],
                                  int(raw["stage_id"]), raw.get("agent_version"),
                                  raw.get("intent"))
                    for name, raw in kept["open_tasks"].items()},
        agent_versions=dict(kept.get("agent_versions", {})),
        attempts={int(stage): int(count) for stage, count in kept.get("attempts", {}).items()},
        visits={int(stage): int(count) for stage, count in kept.get("visits", {}).items()},
        handoff=Handoff(**kept["handoff"]) if "handoff" in kept else None,
    )


def _handoff_fields(handoff: Handoff) -> dict[str, str | int]:
    return {"reason": handoff.reason, "queue": handoff.queue,
            "from_flow_id": handoff.from_flow_id, "summary": handoff.summary}


def _task_fields(task: TaskRef) -> dict[str, str | int]:
    fields: dict[str, str | int] = {"task_id": task.task_id, "context_id": task.context_id,
                                    "a2a_version": task.a2a_version, "stage_id": task.stage_id}
    if task.agent_version is not None:
        fields["agent_version"] = task.agent_version
    if task.intent is not None:
        fields["intent"] = task.intent
    return fields
