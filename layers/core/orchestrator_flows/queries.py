"""Reading and ending calls: what GET and DELETE need, without the agent client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator_flows.errors import SessionEnded, SessionNotFound
from orchestrator_flows.records import (
    SessionState,
    Step,
    StepsResponse,
    load_steps,
    session_state,
)
from orchestrator_flows.store import SessionStore

if TYPE_CHECKING:
    from orchestrator_flows.archive.store import Archive, ArchivedCall


def _not_found(call_identify_id: str) -> SessionNotFound:
    return SessionNotFound(f"no session for call {call_identify_id}")


async def get_session(store: SessionStore, call_identify_id: str,
                      archive: Archive | None = None) -> SessionState:
    """The call as Redis holds it; once Redis no longer does, as the archive does."""
    found = await store.get(call_identify_id)
    if found is not None:
        session, steps = found
        return session_state(session, load_steps(steps))
    call, archived = await _from_archive(archive, call_identify_id)
    return SessionState(
        call_identify_id=call_identify_id, account_id=call.account_id, eci=call.eci,
        current_flow_id=call.current_flow_id, completed_flows=call.completed_flows,
        is_complete=call.is_complete, steps=archived, created_at=call.created_at,
        updated_at=call.updated_at, source="archive")


async def get_steps(store: SessionStore, call_identify_id: str,
                    archive: Archive | None = None) -> StepsResponse:
    found = await store.get(call_identify_id)
    if found is not None:
        return StepsResponse(call_identify_id=call_identify_id, steps=load_steps(found[1]))
    _, archived = await _from_archive(archive, call_identify_id)
    return StepsResponse(call_identify_id=call_identify_id, steps=archived, source="archive")


async def _from_archive(archive: Archive | None, call_identify_id: str
                        ) -> tuple[ArchivedCall, tuple[Step, ...]]:
    """The archived call and its steps (as many as its call item counts), or 404."""
    if archive is None or (call := await archive.call(call_identify_id)) is None:
        raise _not_found(call_identify_id)
    links = await archive.steps(call_identify_id)
    return call, load_steps([link.step for link in links[:call.step_count]])


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
    from orchestrator_flows.archive.store import ArchivedCall

    try:
        claim = await store.claim(call_identify_id)
    except SessionEnded:
        raise _not_found(call_identify_id) from None
    try:
        found = await store.get(call_identify_id)
        if found is None:
            raise _not_found(call_identify_id)
        session, steps = found
        await archive.archive(ArchivedCall.of(session, "ended"), steps)
    except BaseException:
        await store.release(claim)  # the call stays as it was
        raise
