"""The session store: one implementation of the storage rules over a small atomic backend.

`SessionStore` owns everything about how a call is kept (key names under one hash tag, the
claim lease and its fencing token, encoding, TTL); a `Backend` only runs five atomic primitives,
as Lua scripts on Redis (`redis_backend`) or in-process for local runs (`memory_backend`).
One contract-test suite runs the store over every backend.

A step costs two backend calls: `claim` (take the lease, read the state) before the agent call,
`commit` (append the step, write the state, refresh TTLs, drop the lease) after it.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator_flows.errors import ClaimLost, StepInProgress
from orchestrator_flows.session import Session

KEY_PREFIX = "of"


@dataclass(frozen=True)
class CallKeys:
    """Every key of one call; the `{id}` hash tag keeps them in one Redis Cluster slot."""

    state: str
    steps: str
    claim: str

    @classmethod
    def of(cls, call_identify_id: str) -> CallKeys:
        tag = f"{KEY_PREFIX}:{{{call_identify_id}}}"
        return cls(state=f"{tag}:state", steps=f"{tag}:steps", claim=f"{tag}:claim")


@dataclass(frozen=True)
class ClaimResult:
    acquired: bool
    state: dict[str, str]  # empty when the call has no session yet (or when not acquired)
    retry_after_ms: int  # remaining lease of the other claim when not acquired


class Backend(Protocol):
    """Five atomic primitives; each is one round trip to Redis."""

    name: str

    async def claim(self, keys: CallKeys, token: str, lease_ms: int) -> ClaimResult: ...

    async def commit(
        self,
        keys: CallKeys,
        token: str,
        ttl_seconds: int,
        step: str,
        state: dict[str, str],
        return_steps: bool,
    ) -> list[str] | None:
        """Apply only if `token` still holds the claim; None when it does not."""
        ...

    async def release(self, keys: CallKeys, token: str) -> None: ...

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]: ...

    async def delete(self, keys: CallKeys) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Claim:
    """A held per-call lease; `token` fences the commit against a claim that expired."""

    call_identify_id: str
    keys: CallKeys
    token: str
    session: Session | None


class SessionStore:
    def __init__(self, backend: Backend, ttl_seconds: int, lease_seconds: float) -> None:
        self.backend = backend
        self.ttl_seconds = ttl_seconds
        self.lease_ms = int(lease_seconds * 1000)

    async def claim(self, call_identify_id: str) -> Claim:
        keys = CallKeys.of(call_identify_id)
        token = secrets.token_hex(12)
        result = await self.backend.claim(keys, token, self.lease_ms)
        if not result.acquired:
            raise StepInProgress(
                f"another step of call {call_identify_id} is in progress",
                retry_after_seconds=max(1, math.ceil(result.retry_after_ms / 1000)),
            )
        session = Session.from_fields(call_identify_id, result.state) if result.state else None
        return Claim(call_identify_id, keys, token, session)

    async def commit(
        self, claim: Claim, session: Session, step: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """Record the step and the new state; returns the whole trail once the call is complete."""
        steps = await self.backend.commit(
            claim.keys,
            claim.token,
            self.ttl_seconds,
            json.dumps(step, separators=(",", ":"), ensure_ascii=False),
            session.to_fields(),
            return_steps=session.is_complete,
        )
        if steps is None:
            raise ClaimLost(
                f"the claim on call {claim.call_identify_id} expired before the step was "
                "recorded; nothing of this turn was written"
            )
        return [json.loads(s) for s in steps] if session.is_complete else None

    async def release(self, claim: Claim) -> None:
        await self.backend.release(claim.keys, claim.token)

    async def get(self, call_identify_id: str) -> tuple[Session, list[dict[str, Any]]] | None:
        state, steps = await self.backend.read(CallKeys.of(call_identify_id), with_steps=True)
        if not state:
            return None
        return Session.from_fields(call_identify_id, state), [json.loads(s) for s in steps]

    async def delete(self, call_identify_id: str) -> bool:
        return await self.backend.delete(CallKeys.of(call_identify_id))

    async def close(self) -> None:
        await self.backend.close()
