"""Reading and ending calls: what GET and DELETE need, without the agent client."""

from __future__ import annotations

from orchestrator_flows.errors import SessionNotFound
from orchestrator_flows.records import SessionState, StepsResponse, load_steps, session_state
from orchestrator_flows.store import SessionStore


def _not_found(call_identify_id: str) -> SessionNotFound:
    return SessionNotFound(f"no session for call {call_identify_id}")


async def get_session(store: SessionStore, call_identify_id: str) -> SessionState:
    found = await store.get(call_identify_id)
    if found is None:
        raise _not_found(call_identify_id)
    session, steps = found
    return session_state(session, load_steps(steps))


async def get_steps(store: SessionStore, call_identify_id: str) -> StepsResponse:
    found = await store.get(call_identify_id)
    if found is None:
        raise _not_found(call_identify_id)
    return StepsResponse(call_identify_id=call_identify_id, steps=load_steps(found[1]))


async def end_session(store: SessionStore, call_identify_id: str) -> None:
    if not await store.delete(call_identify_id):
        raise _not_found(call_identify_id)
