"""Erasure of one account's data: every call of the account, in Redis and in the archive, is
replaced by a tombstone that keeps only ids, times and its chain's hashes.

One request erases a bounded batch (ERASE_BATCH calls, and no new call past its deadline) and
answers the erasure's receipt: `in_progress` while calls are left (the caller repeats the same
request; the same erasure goes on), `complete` once none is. A repeat after that finds nothing
left and answers the same receipt. Requests running together erase each call once, and count
it once: its tombstone and its count in the receipt are one transaction, on conditions.

The calls are found in the archive's account index (GSI1: archived calls, and calls whose
erasure was interrupted, which keep the index's keys until it is through) and in Redis's
account set (calls Redis may hold, archived or not). A call id that the archive holds for
another account (ids are reused once Redis lets a call go) is not touched there. Each call goes
in this order:

1. its tombstone replaces the call item, and the receipt counts it: from then on no archiver
   writes the call again (its step writes and its call item check for it), and a call id with
   nothing of it anywhere gets an empty tombstone, so that a sweeper that read the call just
   before it left Redis cannot archive it after the erasure;
2. its keys in Redis are deleted (a marker stays for the session TTL, so that a late turn cannot
   start it again; a turn in flight loses its claim and writes nothing);
3. it leaves Redis's account index;
4. its step items are deleted, and its tombstone leaves the archive's account index.

Interrupted anywhere, the next request finds the call again (in one index or the other) and
finishes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from orchestrator_flows.archive.index import ArchiveIndex
from orchestrator_flows.archive.store import Archive, ArchivedCall
from orchestrator_flows.records import ErasureReceipt
from orchestrator_flows.store import SessionStore

# Calls erased by one request, and how many at once.
ERASE_BATCH = 50
CONCURRENCY = 4


class Eraser:
    def __init__(self, *, store: SessionStore, index: ArchiveIndex, archive: Archive,
                 batch: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.index = index
        self.archive = archive
        self.batch = batch or ERASE_BATCH
        self.clock = clock

    async def erase(self, account_id: str, until: float | None = None) -> ErasureReceipt:
        """Go on with the account's erasure (or begin one) for one batch; its receipt. No new
        call is begun past `until` (a moment of `clock`). Each call is counted in the receipt
        by the request that marks it, in the same write as its tombstone."""
        todo = await self._left(account_id, self.batch)
        receipt = await self.archive.receipt(account_id)
        if not todo and receipt is not None and receipt.status == "complete":
            return receipt  # nothing was left: the same answer again
        if receipt is None or receipt.status == "complete":
            receipt = await self.archive.start_erasure(account_id)
        gate = asyncio.Semaphore(CONCURRENCY)
        erasure_id = receipt.erasure_id

        async def erase_one(call_identify_id: str) -> None:
            async with gate:
                if until is None or self.clock() < until:
                    await self._erase_call(call_identify_id, account_id, erasure_id)

        await asyncio.gather(*(erase_one(call) for call in todo))
        if not await self._left(account_id, 1):
            return await self.archive.close_erasure(receipt)
        return await self.archive.erasure(account_id, erasure_id)

    async def _left(self, account_id: str, limit: int) -> list[str]:
        """Calls of the account not yet erased, from both indexes, without repeats."""
        archived, live = await asyncio.gather(self.archive.erasable(account_id, limit),
                                              self.index.of_account(account_id, limit))
        return list(dict.fromkeys(archived + live))[:limit]

    async def _erase_call(self, call_identify_id: str, account_id: str,
                          erasure_id: str) -> None:
        found = await self.store.get(call_identify_id)
        # A call id is the account's only while its session says so (an id may be used again,
        # by another account, once Redis has let the first call go).
        live = found if found is not None and found[0].account_id == account_id else None
        mark = await self.archive.mark_erasing(
            call_identify_id, account_id, erasure_id,
            (ArchivedCall.of(live[0]), live[1]) if live is not None else None)
        if mark == "closed":
            return  # this erasure was closed meanwhile: the account's next one takes the call
        if live is not None:
            await self.store.delete(call_identify_id)
        await self.index.forget(call_identify_id, account_id)
        await self.archive.finish_erasure(call_identify_id, account_id)
