"""The session store's port: five atomic primitives, each one round trip to Redis (a Lua
script) or run in process without awaiting (the embedded backend)."""

from __future__ import annotations

from typing import Protocol

from orchestrator_flows.store.keys import CallKeys
from orchestrator_flows.store.results import ClaimResult


class Backend(Protocol):
    name: str

    async def claim(
        self, keys: CallKeys, token: str, lease_ms: int, reply_key: str | None,
        wait_ms: int = 0,
    ) -> ClaimResult:
        """Take the lease and read the state; first, when `reply_key` is given and a reply is
        recorded under it, return that reply instead (lease not taken); nothing for an ended
        call. With `wait_ms`, a turn that finds the call busy, or turns queued before it,
        takes its place in the queue — a ticket, set on its first claim to give up `wait_ms`
        from then on the store's clock, kept however often it claims — and is Queued; the
        lease goes to the queue's first live ticket before any other turn."""
        ...

    async def await_turn(self, keys: CallKeys, seconds: float, first: bool) -> None:
        """Return when the claim is let go (by a commit, a release, a delete, or the turn
        before leaving) — `first`: for the first turn in line, else for the others — or
        after `seconds`, whichever comes first. Never raises for the store: a wake-up is a
        hint, the claim that follows decides."""
        ...

    async def leave(self, keys: CallKeys, token: str) -> None:
        """Take a turn's ticket out of the queue (a turn that stops waiting)."""
        ...

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
        """Apply only if `token` still holds the claim; None when it does not. `reply` is an
        (Idempotency-Key digest, reply record) to record with the step."""
        ...

    async def release(self, keys: CallKeys, token: str) -> None: ...

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]: ...

    async def delete(self, keys: CallKeys, ended_seconds: int) -> bool:
        """Remove the call's keys and mark it ended for `ended_seconds`; whether it existed."""
        ...

    async def unschedule(self, keys: CallKeys) -> None:
        """Clear when the call is due in the archive's index (its next turn schedules it)."""
        ...

    async def touch(self, keys: CallKeys, ttl_seconds: int) -> bool:
        """Renew the TTL of the call's keys; whether the call exists."""
        ...

    async def ping(self) -> None:
        """Whether the store answers (readiness); raises StoreUnavailable when it does not."""
        ...

    async def close(self) -> None: ...
