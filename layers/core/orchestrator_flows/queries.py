"""Reading and ending calls: what GET and DELETE need, without the agent client."""

from __future__ import annotations

from typing import Any

from orchestrator_flows.errors import SessionNotFound
from orchestrator_flows.store import SessionStore


def _not_found(call_identify_id: str) -> SessionNotFound:
    return SessionNotFound(f"no session for call {call_identify_id}")


async def get_session(store: SessionStore, call_identify_id: str) -> dict[str, Any]:
    found = await store.get(call_identify_id)
    if found is None:
        raise _not_found(call_identify_id)
    session, steps = found
    return session.to_public(steps)


async def get_steps(store: SessionStore, call_identify_id: str) -> dict[str, Any]:
    found = await store.get(call_identify_id)
    if found is None:
        raise _not_found(call_identify_id)
    return {"call_identify_id": call_identify_id, "steps": found[1]}


async def end_session(store: SessionStore, call_identify_id: str) -> None:
    if not await store.delete(call_identify_id):
        raise _not_found(call_identify_id)
