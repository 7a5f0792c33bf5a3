"""The embedded backend for local runs without Redis: the same five primitives, in process,
over a keyspace with Redis's expiry rules. Each primitive runs without awaiting, so on one
event loop it is as atomic as a Lua script."""

from __future__ import annotations

import asyncio
import contextlib
import time

from orchestrator_flows.kv.memory import Keyspace
from orchestrator_flows.store.codec import completes_call
from orchestrator_flows.store.keys import CallKeys
from orchestrator_flows.store.results import Busy, ClaimResult, Ended, Queued, Recorded, Taken


def _token_of(ticket: str) -> str:
    return ticket.split(":", 1)[1]


class MemoryBackend:
    name = "embedded"

    def __init__(self, keyspace: Keyspace | None = None) -> None:
        self.keyspace = keyspace or Keyspace()
        # Per call, what the turns waiting in its queue wait on (set, then replaced, to wake).
        self._bells: dict[str, asyncio.Event] = {}

    async def claim(
        self, keys: CallKeys, token: str, lease_ms: int, reply_key: str | None,
        wait_ms: int = 0,
    ) -> ClaimResult:
        space = self.keyspace
        holder = space.get(keys.claim)
        if holder == token:
            return Taken(space.hash_of(keys.state))
        if space.exists(keys.ended):
            return Ended()
        reply = space.hash_of(keys.replies).get(reply_key) if reply_key else None
        if reply is not None:
            steps = tuple(space.list_of(keys.steps)) if completes_call(reply) else ()
            if wait_ms:
                self._leave(keys, token)
            return Recorded(reply, space.hash_of(keys.state), steps)
        queue = self._live_queue(keys)
        if holder is None and (not queue or _token_of(queue[0]) == token):
            self._keep_queue(keys, queue[1:], lease_ms)
            space.put(keys.claim, token, lease_ms / 1000)
            return Taken(space.hash_of(keys.state))
        if wait_ms:
            place = next((i for i, ticket in enumerate(queue) if _token_of(ticket) == token),
                         None)
            if place is None:
                place = len(queue)
                queue.append(f"{int(time.time() * 1000) + wait_ms}:{token}")
            self._keep_queue(keys, queue, lease_ms)
            if holder is None:
                self._wake(keys)
            return Queued(space.pttl_ms(keys.claim), place)
        return Busy(space.pttl_ms(keys.claim))

    def _keep_queue(self, keys: CallKeys, queue: list[str], lease_ms: int) -> None:
        if queue:
            self.keyspace.put(keys.queue, queue, (lease_ms + 30_000) / 1000)
        else:
            self.keyspace.delete(keys.queue)

    def _live_queue(self, keys: CallKeys) -> list[str]:
        """The call's queue without the tickets whose turn gave up."""
        now_ms = time.time() * 1000
        return [ticket for ticket in self.keyspace.list_of(keys.queue)
                if int(ticket.split(":", 1)[0]) >= now_ms]

    async def await_turn(self, keys: CallKeys, seconds: float, first: bool) -> None:
        # One event per call wakes every waiting turn (in process, a wake-up costs nothing).
        bell = self._bells.setdefault(keys.bell, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bell.wait(), seconds)

    async def leave(self, keys: CallKeys, token: str) -> None:
        self._leave(keys, token)

    def _leave(self, keys: CallKeys, token: str) -> None:
        queue = self._live_queue(keys)
        kept = [ticket for ticket in queue if _token_of(ticket) != token]
        if len(kept) != len(queue):
            self._keep_queue(keys, kept, 0)
            if kept and not self.keyspace.exists(keys.claim):
                self._wake(keys)

    def _wake(self, keys: CallKeys) -> None:
        bell = self._bells.pop(keys.bell, None)
        if bell is not None:
            bell.set()

    async def commit(
        self,
        keys: CallKeys,
        token: str,
        ttl_seconds: int,
        step: str,
        state: dict[str, str],
        return_steps: bool,
        reply: tuple[str, str] | None,
    ) -> list[str] | None:
        space = self.keyspace
        if space.hash_of(keys.state).get("last_commit") == token:  # sent again: it already ran
            return space.list_of(keys.steps) if return_steps else []
        if space.get(keys.claim) != token:
            return None
        space.append(keys.steps, step, ttl_seconds)
        space.put(keys.state, {**space.hash_of(keys.state), **state, "last_commit": token},
                  ttl_seconds)
        replies = space.hash_of(keys.replies)
        if reply is not None:
            replies[reply[0]] = reply[1]
        if replies:
            space.put(keys.replies, replies, ttl_seconds)
        space.delete(keys.claim)
        self._wake(keys)
        return space.list_of(keys.steps) if return_steps else []

    async def release(self, keys: CallKeys, token: str) -> None:
        if self.keyspace.get(keys.claim) == token:
            self.keyspace.delete(keys.claim)
            self._wake(keys)

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]:
        state = self.keyspace.hash_of(keys.state)
        return state, self.keyspace.list_of(keys.steps) if with_steps and state else []

    async def delete(self, keys: CallKeys, ended_seconds: int) -> bool:
        if not self.keyspace.exists(keys.state):
            return False  # its first turn may be in flight: left as it is
        self.keyspace.delete(keys.state, keys.steps, keys.claim, keys.replies, keys.queue)
        self.keyspace.put(keys.ended, "1", ended_seconds)
        self._wake(keys)
        return True

    async def unschedule(self, keys: CallKeys) -> None:
        self.keyspace.set_field(keys.state, "archive_due", "0")

    async def touch(self, keys: CallKeys, ttl_seconds: int) -> bool:
        space = self.keyspace
        if not space.exists(keys.state):
            return False
        for key in (keys.state, keys.steps, keys.replies):
            space.expire(key, ttl_seconds)
        return True

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self.keyspace.clear()

    def keys_of(self, call_identify_id: str) -> list[str]:
        """Live keys of one call (what a SCAN over Redis would find), for tests."""
        return self.keyspace.keys(CallKeys.of(call_identify_id).tag)

    def pttl_ms(self, key: str) -> int:
        return self.keyspace.pttl_ms(key)
