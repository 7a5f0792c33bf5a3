"""Reading and ending calls: what GET and DELETE need, without the agent client."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orchestrator_flows.errors import ArchiveOff, SessionEnded, SessionNotFound, TrailConflict
from orchestrator_flows.records import (
    CallsPage,
    CallSummary,
    ErasureReceipt,
    SessionState,
    Step,
    StepsResponse,
    load_steps,
    session_state,
)
from orchestrator_flows.store import SessionStore

if TYPE_CHECKING:
    from orchestrator_flows.archive.index import ArchiveIndex
    from orchestrator_flows.archive.store import Archive, ArchivedCall

logger = logging.getLogger(__name__)
# How long one erasure request goes on erasing (API Gateway answers 503 past 30 s).
ERASE_SECONDS = 20.0


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
        updated_at=call.updated_at, source="archive",
        # An escalated call's last step holds its handoff (so does one ended after it).
        handoff=archived[-1].handoff if archived else None)


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
    from orchestrator_flows.archive.store import ArchiveConflict, ArchivedCall, CallErased

    try:
        claim = await store.claim(call_identify_id)
    except SessionEnded:
        raise _not_found(call_identify_id) from None
    try:
        found = await store.get(call_identify_id)
        if found is None:
            raise _not_found(call_identify_id)
        session, steps = found
        try:
            await archive.archive(ArchivedCall.of(session, "ended"), steps)
        except CallErased:
            # Its account's data was erased (an erasure running now, or an earlier call under
            # the same id): nothing is archived under that id again; the call is ended.
            logger.warning("call %s: its id belongs to an erased call; ended unarchived",
                           call_identify_id)
        except ArchiveConflict as exc:
            raise TrailConflict(f"call {call_identify_id} cannot be archived: the archive "
                                f"holds another trail under its id ({exc}); it was left as "
                                "it was") from None
    except BaseException:
        await store.release(claim)  # the call stays as it was
        raise


async def list_calls(archive: Archive | None, account_id: str, limit: int,
                     cursor: str | None) -> CallsPage:
    """One page of the account's archived calls, newest first."""
    if archive is None:
        raise _archive_off()
    from orchestrator_flows.archive.items import iso_time

    page = await archive.calls_of(account_id, limit, cursor)
    return CallsPage(account_id=account_id, next_cursor=page.cursor, calls=tuple(
        CallSummary(call_identify_id=call.call_identify_id, eci=call.eci, status=call.status,
                    current_flow_id=call.current_flow_id, step_count=call.step_count,
                    created_at=call.created_at, updated_at=call.updated_at,
                    archived_at=iso_time(call.archived_at))
        for call in page.calls))


async def erase_account(store: SessionStore, archive: Archive | None,
                        account_id: str) -> ErasureReceipt:
    """Erase a batch of the account's calls, in Redis and in the archive; the receipt."""
    import time

    from orchestrator_flows.archive.erasure import Eraser

    index: ArchiveIndex | None = store.archive_index
    if archive is None or index is None:
        raise _archive_off()
    eraser = Eraser(store=store, index=index, archive=archive)
    return await eraser.erase(account_id, until=time.monotonic() + ERASE_SECONDS)


def _archive_off() -> ArchiveOff:
    return ArchiveOff("this deployment keeps no archive (ARCHIVE_TABLE is not set): there are "
                      "no archived calls to list or erase, and live calls expire with their "
                      "session TTL")

