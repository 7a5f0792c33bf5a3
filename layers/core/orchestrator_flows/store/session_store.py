"""The session store: one implementation of the storage rules over a small atomic backend.

`SessionStore` owns everything about how a call is kept (the claim lease and its fencing
token, the reply records of Idempotency-Keys, TTLs); a `Backend` only runs five atomic
primitives.

A step costs two backend calls: `claim` (take the lease, read the state) before the agent call,
`commit` (append the step, write the state, refresh TTLs, drop the lease) after it. Idempotent
turns ride on the same two calls: the claim first looks the turn's key up in the call's
`replies` hash (a recorded answer is replayed without taking the lease), and the commit files
the answer under the key with the step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

from orchestrator_flows.archive.index import Scheduled
from orchestrator_flows.errors import (
    ClaimLost,
    IdempotencyKeyReused,
    SessionEnded,
    StepInProgress,
    StoreUnavailable,
)
from orchestrator_flows.session import Session
from orchestrator_flows.store.codec import ReplyRecord, session_fields, session_from_fields
from orchestrator_flows.store.keys import CallKeys
from orchestrator_flows.store.port import Backend
from orchestrator_flows.store.results import Busy, ClaimResult, Ended, Queued, Recorded

if TYPE_CHECKING:
    from orchestrator_flows.archive.index import ArchiveIndex

logger = logging.getLogger("orchestrator_flows")
# The state hash's field holding when the call is due in the archive's index (epoch ms).
ARCHIVE_DUE_FIELD = "archive_due"
# How far the due moment may lag behind the turns before a commit moves it (5 minutes): a call
# whose turns come closer than that is scheduled once, not at every turn.
ARCHIVE_REFRESH_MS = 300_000
# How often a waiting turn claims again unwoken: a holder that crashed is not announced.
RECLAIM_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A turn's Idempotency-Key and the fingerprint of its body."""

    key: str
    fingerprint: str

    @property
    def digest(self) -> str:
        """What the store files the key's answer under: a key is the caller's free text (it
        could hold anything, a card number included), so it is never stored itself."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Claim:
    """A held per-call lease; `token` fences the commit against a claim that expired."""

    call_identify_id: str
    keys: CallKeys
    token: str
    session: Session | None
    idempotency: Idempotency | None = None
    archive_due_ms: int = 0  # when the call is due in the archive's index, as last scheduled


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer first given to a turn with this Idempotency-Key, as it was stored; with the
    call's state and trail when that answer completed the call (its summary is rebuilt from
    them rather than stored twice)."""

    answer: str
    completed: tuple[Session, tuple[str, ...]] | None


class SessionStore:
    def __init__(self, *, backend: Backend, ttl_seconds: int, lease_seconds: float,
                 archive_index: ArchiveIndex | None = None,
                 archive_idle_seconds: int = 2700) -> None:
        self.backend = backend
        self.ttl_seconds = ttl_seconds
        self.lease_ms = int(lease_seconds * 1000)
        # With an archive: commits schedule their call there, sent beside the commit.
        self.archive_index = archive_index
        self.archive_idle_ms = archive_idle_seconds * 1000
        self.clock: Callable[[], float] = time.time  # what "now" the schedule is taken from

    @overload
    async def claim(self, call_identify_id: str) -> Claim: ...

    @overload
    async def claim(
        self, call_identify_id: str, idempotency: Idempotency | None,
        wait_seconds: float = 0.0,
    ) -> Claim | Replay: ...

    async def claim(
        self, call_identify_id: str, idempotency: Idempotency | None = None,
        wait_seconds: float = 0.0,
    ) -> Claim | Replay:
        """The call's lease and state, or the recorded answer to this turn's key; raises
        StepInProgress, SessionEnded or IdempotencyKeyReused. With `wait_seconds`, a turn that
        finds another in flight waits its turn, in arrival order, that long at most before
        StepInProgress (a recorded answer is replayed at once, never queued)."""
        keys = CallKeys.of(call_identify_id)
        # Unique, not secret (it never leaves Redis): the random module's generator, seeded
        # from the OS and again in a forked child, costs no system call as `secrets` does.
        token = f"{random.getrandbits(96):024x}"
        reply_key = idempotency.digest if idempotency else None
        wait_ms = int(wait_seconds * 1000)
        try:
            result = await self.backend.claim(keys, token, self.lease_ms, reply_key, wait_ms)
            if isinstance(result, Queued):
                result = await self._wait_turn(keys, token, reply_key, wait_ms, result)
        except StoreUnavailable:
            raise  # the store is out of reach: a ticket it took lapses with the turn's wait
        except BaseException:
            if wait_ms:  # cancelled: a claim sent may have queued the turn before its answer
                await self._leave_quietly(keys, token)
            raise
        match result:
            case Recorded():
                assert idempotency is not None
                return _replay(call_identify_id, idempotency, result)
            case Ended():
                raise SessionEnded(f"call {call_identify_id} was ended; it cannot take more "
                                   "turns")
            case Busy(remaining_ms) | Queued(remaining_ms):
                raise StepInProgress(
                    f"another step of call {call_identify_id} is in progress",
                    retry_after_seconds=retry_after_seconds(remaining_ms, self.lease_ms),
                )
        if not result.state:
            return Claim(call_identify_id, keys, token, None, idempotency)
        due = result.state.get(ARCHIVE_DUE_FIELD, "0")
        return Claim(call_identify_id, keys, token,
                     session_from_fields(call_identify_id, result.state), idempotency,
                     int(due) if due.isdigit() else 0)

    async def _wait_turn(self, keys: CallKeys, token: str, reply_key: str | None,
                         wait_ms: int, queued: Queued) -> ClaimResult:
        """Wait in the queue until the claim is this turn's (or the call ended, or the turn's
        answer got recorded), `wait_ms` at most: woken when the claim is let go, and claiming
        again at least every RECLAIM_SECONDS (a holder that crashed lets its claim lapse
        unannounced). A turn that stops waiting leaves the queue."""
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_ms / 1000
        result: ClaimResult = queued
        while isinstance(result, Queued) and (left := end - loop.time()) > 0:
            await self.backend.await_turn(keys, min(left, RECLAIM_SECONDS), result.place == 0)
            result = await self.backend.claim(keys, token, self.lease_ms, reply_key, wait_ms)
        if isinstance(result, Queued):
            await self._leave_quietly(keys, token)
        return result

    async def _leave_quietly(self, keys: CallKeys, token: str) -> None:
        # A ticket left behind holds the queue only until its turn's wait is over.
        try:
            await self.backend.leave(keys, token)
        except StoreUnavailable:
            logger.warning("a turn that stopped waiting could not leave the queue")

    async def commit(
        self, claim: Claim, session: Session, step: str, answer: str | None = None
    ) -> list[str] | None:
        """Record the step and the new state, and `answer` under the claim's Idempotency-Key;
        returns the whole trail once the call is over (complete or escalated). Raises
        ClaimLost, writing nothing, when the claim expired first."""
        reply = None
        if claim.idempotency is not None and answer is not None:
            record = ReplyRecord(session.is_over, claim.idempotency.fingerprint, answer)
            reply = (claim.idempotency.digest, record.encode())
        fields = session_fields(session)
        now_ms = int(self.clock() * 1000)
        due = self._archive_due(claim, session, now_ms)
        if due is not None:
            fields[ARCHIVE_DUE_FIELD] = str(due)
        committing = self.backend.commit(
            claim.keys,
            claim.token,
            self.ttl_seconds,
            step,
            fields,
            return_steps=session.is_over,
            reply=reply,
        )
        steps = await (committing if due is None else
                       self._commit_and_schedule(claim, session, committing, due, now_ms))
        if steps is None:
            raise ClaimLost(
                f"the claim on call {claim.call_identify_id} expired before the step was "
                "recorded; nothing of this turn was written"
            )
        return steps if session.is_over else None

    def _archive_due(self, claim: Claim, session: Session, now_ms: int) -> int | None:
        """When the call falls due in the archive's index, if this commit must say so: when it
        completes or escalates the call (due at once), and otherwise only when the due moment
        it would set is more than ARCHIVE_REFRESH_MS past the one the index holds. A due
        moment left a little early only has an idle call archived a little sooner (and
        archived again should it go on); it is never late, so a call is archived before it
        expires. Most calls are
        scheduled twice, at their first turn and their last."""
        if self.archive_index is None:
            return None
        if session.is_over:
            return now_ms
        due = now_ms + self.archive_idle_ms
        return due if due - claim.archive_due_ms > ARCHIVE_REFRESH_MS else None

    async def _commit_and_schedule(self, claim: Claim, session: Session,
                                   committing: Awaitable[list[str] | None],
                                   due: int, now_ms: int) -> list[str] | None:
        """The commit and the call's schedule, sent together: the commit and a pipeline for the
        index (the call's shard, its account's set; on a cluster, most often other nodes) in
        flight at once, not one more round trip after the commit. A schedule that fails loses
        no step (the commit stands); the due moment the commit recorded is then cleared, so
        that the call's next turn schedules it again. A commit that lost its claim takes its
        schedule back (it may have been sent after an erasure took the call off the index)."""
        assert self.archive_index is not None
        scheduling = Scheduled(claim.call_identify_id, session.account_id, due)
        steps, scheduled = await asyncio.gather(
            committing, self.archive_index.schedule(scheduling, now_ms), return_exceptions=True)
        if isinstance(steps, BaseException):
            raise steps
        if steps is None and not isinstance(scheduled, BaseException):
            try:
                await self.archive_index.undo(scheduling, now_ms)
            except StoreUnavailable:
                logger.warning("call %s lost its claim; its schedule could not be taken back",
                               claim.call_identify_id)
        elif isinstance(scheduled, BaseException):
            logger.warning("call %s was not scheduled for the archive: %s",
                           claim.call_identify_id, type(scheduled).__name__)
            try:
                await self.backend.unschedule(claim.keys)
            except StoreUnavailable:
                logger.warning("call %s: its schedule could not be cleared either",
                               claim.call_identify_id)
        return steps

    async def release(self, claim: Claim) -> None:
        await self.backend.release(claim.keys, claim.token)

    async def keep_alive(self, call_identify_id: str) -> bool:
        """Renew the TTL of the call's keys (a call the archive could not take yet must not
        expire); whether the call is still there."""
        return await self.backend.touch(CallKeys.of(call_identify_id), self.ttl_seconds)

    async def get(self, call_identify_id: str) -> tuple[Session, list[str]] | None:
        """The call's state and its steps (as stored), or None."""
        state, steps = await self.backend.read(CallKeys.of(call_identify_id), with_steps=True)
        if not state:
            return None
        return session_from_fields(call_identify_id, state), steps

    async def delete(self, call_identify_id: str) -> bool:
        """End the call: remove every key of it, and leave a marker for the session TTL so
        that a late turn, or a keyed retry of an old one, cannot start it again."""
        return await self.backend.delete(CallKeys.of(call_identify_id), self.ttl_seconds)

    async def ping(self) -> None:
        await self.backend.ping()

    async def close(self) -> None:
        await self.backend.close()


def _replay(call_identify_id: str, idempotency: Idempotency, result: Recorded) -> Replay:
    record = ReplyRecord.decode(result.reply)
    if record.fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {idempotency.key!r} was used for another turn of call "
            f"{call_identify_id}; a key names one turn")
    completed = ((session_from_fields(call_identify_id, result.state), result.steps)
                 if record.completed else None)
    return Replay(record.answer, completed)


def retry_after_seconds(remaining_ms: int, lease_ms: int) -> int:
    """When the running turn is likely done, in whole seconds (at least one). Most turns take
    milliseconds, a slow agent seconds: a turn that has run for t is likely to need about t
    more, and never more than what is left of its lease."""
    held_ms = max(0, lease_ms - remaining_ms)
    return max(1, min(math.ceil(held_ms / 1000), math.ceil(remaining_ms / 1000)))
