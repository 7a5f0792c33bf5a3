"""Reading and ending calls: what GET and DELETE need, without the agent client."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from orchestrator_flows.errors import SessionEnded, SessionNotFound
from orchestrator_flows.records import SessionState, StepsResponse, load_steps, session_state
from orchestrator_flows.store import SessionStore

if TYPE_CHECKING:
    from orchestrator_flows.archive.store import Archive


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


async def end_session(store: SessionStore, call_identify_id: str,
                      archive: Archive | None = None) -> None:
    """Remove every key of the call (a marker stays). With an archive, the call is archived
    first, as ended, under its claim (so that no turn adds a step between the two): an archive
    that cannot take it leaves the call as it was (503 archive_unavailable), a turn in flight
    answers 409 step_in_progress."""
    if archive is not None:
        await _archive_before_delete(store, call_identify_id, archive)
    if not await store.delete(call_identify_id):
        raise _not_found(call_identify_id)


async def _archive_before_delete(store: SessionStore, call_identify_id: str,
                                 archive: Archive) -> None:
    from orchestrator_flows.archive.sweeper import archived_call

    try:
        claim = await store.claim(call_identify_id)
    except SessionEnded:
        raise _not_found(call_identify_id) from None
    try:
        found = await store.get(call_identify_id)
        if found is None:
            raise _not_found(call_identify_id)
        session, steps = found
        await archive.archive(dataclasses.replace(archived_call(session), status="ended"),
                              steps)
    except BaseException:
        await store.release(claim)  # the call stays as it was
        raise
