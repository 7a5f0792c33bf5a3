"""The sweeper: archives the calls the index says are due (completed ones at once, idle ones
ARCHIVE_IDLE_SECONDS after their last turn), a bounded number per run, and takes each off the
index once it is in the archive. Running twice at once, or again after a crash, archives
nothing twice (the archive's writes are idempotent) and loses nothing (a call leaves the index
only once archived, and only if no turn moved it meanwhile).

When the archive cannot be written, the call stays due, and its keys in Redis are kept alive
(their TTL renewed) so that a call not yet archived never expires silently; each such run is
counted (`failed`, `kept_alive`) for the metric and alarm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator_flows.archive.index import SHARDS, ArchiveIndex, Scheduled
from orchestrator_flows.archive.store import Archive, ArchiveConflict, ArchivedCall, CallErased
from orchestrator_flows.errors import ArchiveUnavailable
from orchestrator_flows.store import SessionStore

# A call is swept this long after it fell due, never sooner: its turn's commit, sent together
# with its scheduling, has landed by then (or failed), so the trail read is the whole one.
GRACE_MS = 10_000
# Calls archived at once by one sweeper (each a few requests to Redis and DynamoDB).
CONCURRENCY = 8
logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    archived: int = 0
    gone: int = 0  # due, but no longer in Redis (expired or deleted): nothing to archive
    failed: int = 0
    kept_alive: int = 0
    lag_seconds: float = 0.0  # how long the oldest call still due has been due

    @property
    def swept(self) -> int:
        return self.archived + self.gone + self.failed


class Sweeper:
    def __init__(self, *, store: SessionStore, index: ArchiveIndex, archive: Archive,
                 batch: int = 100, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.index = index
        self.archive = archive
        self.batch = batch
        self.clock = clock
        self._next_shard = 0
        self._sweeping = asyncio.Semaphore(CONCURRENCY)

    async def run(self, max_calls: int = 500, until: float | None = None) -> SweepReport:
        """Archive up to `max_calls` due calls, shard after shard (starting where the last run
        of this sweeper stopped, so that no shard waits on another's backlog), CONCURRENCY at a
        time; no new batch is started past `until` (a moment of `clock`, the caller's
        deadline)."""
        report = SweepReport()
        upto = int(self.clock() * 1000) - GRACE_MS
        for offset in range(SHARDS):
            shard = (self._next_shard + offset) % SHARDS
            left = max_calls - report.swept
            if left <= 0 or (until is not None and self.clock() >= until):
                self._next_shard = shard
                break
            batch = await self.index.due(shard, upto, min(left, self.batch))
            await asyncio.gather(*(self._sweep_one(call, report) for call in batch))
        oldest = await self.index.oldest()
        if oldest is not None:
            report.lag_seconds = max(0.0, (upto - oldest) / 1000)
        return report

    async def _sweep_one(self, call: Scheduled, report: SweepReport) -> None:
        async with self._sweeping:
            found = await self.store.get(call.call_identify_id)
            if found is None:
                await self.index.done(call)
                report.gone += 1
                return
            session, steps = found
            try:
                await self.archive.archive(ArchivedCall.of(session), steps)
            except CallErased:
                await self.index.done(call)  # erased meanwhile: nothing is to be kept
                report.gone += 1
                return
            except (ArchiveUnavailable, ArchiveConflict) as exc:
                logger.warning("call %s could not be archived: %s", call.call_identify_id, exc)
                report.failed += 1
                if await self.store.keep_alive(call.call_identify_id):
                    report.kept_alive += 1
                    # Kept in Redis longer: kept in its account's set as long, for erasure.
                    await self.index.hold(call.call_identify_id, call.account_id,
                                          int(self.clock() * 1000))
                return
            await self.index.done(call)
            report.archived += 1
