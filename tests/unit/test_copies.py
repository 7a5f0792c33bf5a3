"""The copies built field by field on every step (cheaper than `dataclasses.replace`) keep every
field: each test sets every field to a value unlike its default, and fails when a field is
added and not set here, so a copy that forgets a new field cannot pass."""

from __future__ import annotations

import dataclasses
from typing import Any

from orchestrator_flows.a2a.messages import AgentReply
from orchestrator_flows.records import Attempt
from orchestrator_flows.session import Handoff, Session, TaskRef


def assert_no_field_at_its_default(record: Any) -> None:
    for field in dataclasses.fields(record):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            continue
        assert getattr(record, field.name) != default, f"set {field.name} in this test"


def a_session_with_every_field_set() -> Session:
    session = Session(
        call_identify_id="CALL-1", account_id="ACC-1", eci="ECI-1", context_id="ctx-1",
        current_flow_id=3, completed_flows=[1, 2], is_complete=True, step_count=7,
        created_at="2026-11-25T10:00:00.000Z", updated_at="2026-11-25T10:05:00.000Z",
        open_tasks={"auth": TaskRef("task-1", "ctx-1", "0.3", 2, "v2")},
        agent_versions={"auth": "v2"}, attempts={2: 3}, visits={1: 1, 3: 2},
        handoff=Handoff(reason="max_attempts", queue="identity", from_flow_id=2,
                        summary="Escalated at AUTHENTICATION"))
    assert_no_field_at_its_default(session)
    return session


def test_a_session_copy_keeps_every_field_and_shares_no_list_or_map() -> None:
    session = a_session_with_every_field_set()
    copy = session.copy()
    assert copy == session
    copy.completed_flows.append(3)
    copy.open_tasks.clear()
    copy.agent_versions.clear()
    copy.attempts.clear()
    copy.visits.clear()
    assert (session.attempts, session.visits) == ({2: 3}, {1: 1, 3: 2})
    assert session.completed_flows == [1, 2]
    assert session.open_tasks == {"auth": TaskRef("task-1", "ctx-1", "0.3", 2, "v2")}
    assert session.agent_versions == {"auth": "v2"}


def test_a_session_is_stored_and_read_back_whole() -> None:
    from orchestrator_flows.store.codec import session_fields, session_from_fields

    session = a_session_with_every_field_set()
    assert session_from_fields("CALL-1", session_fields(session)) == session


def test_a_reply_with_its_tries_keeps_every_other_field() -> None:
    reply = AgentReply(text="hi", data={"k": 1}, state="input-required", task_id="task-1",
                       context_id="ctx-1", a2a_version="0.3",
                       attempts=(Attempt(outcome="agent_timeout", latency_ms=5.0),))
    assert_no_field_at_its_default(reply)
    tries = (Attempt(outcome="agent_unreachable", latency_ms=1.0),
             Attempt(outcome="ok", latency_ms=2.0))
    assert reply.tried(tries) == dataclasses.replace(reply, attempts=tries)
