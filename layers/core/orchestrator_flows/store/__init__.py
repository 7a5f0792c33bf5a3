"""The session store: one implementation of the storage rules over a small atomic backend.

`SessionStore` owns everything about how a call is kept (key names under one hash tag, the
claim lease and its fencing token, encoding, TTL); a `Backend` only runs five atomic primitives,
as Lua scripts on Redis (`redis_backend`) or in-process for local runs (`memory_backend`).
One contract-test suite runs the store over every backend.

A step costs two backend calls: `claim` (take the lease, read the state) before the agent call,
`commit` (append the step, write the state, refresh TTLs, drop the lease) after it.

Idempotent turns ride on the same two calls: the claim first looks the turn's Idempotency-Key up
in the call's `replies` hash (a recorded answer is replayed without taking the lease), and the
commit records the answer under the key with the step. A reply record is
`<1 if the call completed, else 0><sha256 of the turn><the answer as JSON>`, filed under a
digest of the key (never the key itself).
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any, Protocol, overload

from orchestrator_flows.breaker import BreakerBackend
from orchestrator_flows.errors import (
    ClaimLost,
    IdempotencyKeyReused,
    SessionEnded,
    StepInProgress,
    UnstorableStep,
)
from orchestrator_flows.session import Session

KEY_PREFIX = "of"


@dataclass(frozen=True)
class CallKeys:
    """Every key of one call; the `{id}` hash tag keeps them in one Redis Cluster slot."""

    state: str
    steps: str
    claim: str
    replies: str  # Idempotency-Key -> reply record
    ended: str  # set by DELETE, for the session TTL: a late turn must not start the call again

    @classmethod
    def of(cls, call_identify_id: str) -> CallKeys:
        tag = f"{KEY_PREFIX}:{{{call_identify_id}}}"
        return cls(state=f"{tag}:state", steps=f"{tag}:steps", claim=f"{tag}:claim",
                   replies=f"{tag}:replies", ended=f"{tag}:ended")


def breaker_key(agent: str) -> str:
    """One agent's circuit breaker, shared by every call (its own hash tag)."""
    return f"{KEY_PREFIX}:breaker:{{{agent}}}"


@dataclass(frozen=True)
class Taken:
    """The lease is this turn's; `state` is empty when the call has no session yet."""

    state: dict[str, str]


@dataclass(frozen=True)
class Busy:
    """Another turn holds the lease, which lapses in `remaining_ms`."""

    remaining_ms: int


@dataclass(frozen=True)
class Recorded:
    """A reply is recorded under the turn's Idempotency-Key (lease not taken), with the call's
    state, and its trail when that reply completed the call."""

    reply: str
    state: dict[str, str]
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ended:
    """The call was ended with DELETE; nothing was taken."""


ClaimResult = Taken | Busy | Recorded | Ended


@dataclass(frozen=True)
class Idempotency:
    """A turn's Idempotency-Key and the fingerprint of its body."""

    key: str
    fingerprint: str

    @property
    def digest(self) -> str:
        """What the store files the key's answer under: a key is the caller's free text (it
        could hold anything, a card number included), so it is never stored itself."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Replay:
    """The answer first given to a turn with this Idempotency-Key, to be sent again as it was."""

    answer: dict[str, Any]


class Backend(BreakerBackend, Protocol):
    """Five atomic primitives for calls (and three for agents' breakers, BreakerBackend); each is
    one round trip to Redis."""

    name: str

    async def claim(
        self, keys: CallKeys, token: str, lease_ms: int, reply_key: str | None
    ) -> ClaimResult:
        """Take the lease and read the state; first, when `reply_key` is given and a reply is
        recorded under it, return that reply instead (lease not taken); nothing for an ended
        call."""
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
        (Idempotency-Key, reply record) to record with the step."""
        ...

    async def release(self, keys: CallKeys, token: str) -> None: ...

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]: ...

    async def delete(self, keys: CallKeys, ended_seconds: int) -> bool:
        """Remove the call's keys and mark it ended for `ended_seconds`; whether it existed."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Claim:
    """A held per-call lease; `token` fences the commit against a claim that expired."""

    call_identify_id: str
    keys: CallKeys
    token: str
    session: Session | None
    idempotency: Idempotency | None = None


class SessionStore:
    def __init__(self, backend: Backend, ttl_seconds: int, lease_seconds: float) -> None:
        self.backend = backend
        self.ttl_seconds = ttl_seconds
        self.lease_ms = int(lease_seconds * 1000)

    @overload
    async def claim(self, call_identify_id: str) -> Claim: ...

    @overload
    async def claim(
        self, call_identify_id: str, idempotency: Idempotency | None
    ) -> Claim | Replay: ...

    async def claim(
        self, call_identify_id: str, idempotency: Idempotency | None = None
    ) -> Claim | Replay:
        keys = CallKeys.of(call_identify_id)
        token = secrets.token_hex(12)
        result = await self.backend.claim(
            keys, token, self.lease_ms, idempotency.digest if idempotency else None)
        if isinstance(result, Recorded):
            assert idempotency is not None
            return self._replay(call_identify_id, idempotency, result)
        if isinstance(result, Ended):
            raise SessionEnded(f"call {call_identify_id} was ended; it cannot take more turns")
        if isinstance(result, Busy):
            raise StepInProgress(
                f"another step of call {call_identify_id} is in progress",
                retry_after_seconds=retry_after_seconds(result.remaining_ms, self.lease_ms),
            )
        session = Session.from_fields(call_identify_id, result.state) if result.state else None
        return Claim(call_identify_id, keys, token, session, idempotency)

    @staticmethod
    def _replay(call_identify_id: str, idempotency: Idempotency, result: Recorded) -> Replay:
        record = result.reply
        completed, fingerprint, answer = record[0], record[1:65], record[65:]
        if fingerprint != idempotency.fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {idempotency.key!r} was used for another turn of call "
                f"{call_identify_id}; a key names one turn")
        replayed: dict[str, Any] = _loads(answer)
        if completed == "1":
            # The summary is rebuilt from the stored trail rather than stored twice.
            session = Session.from_fields(call_identify_id, result.state)
            replayed["session_summary"] = session.to_public([_loads(s) for s in result.steps])
        return Replay(replayed)

    async def commit(
        self, claim: Claim, session: Session, step: dict[str, Any],
        answer: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]] | None:
        """Record the step and the new state, and `answer` under the claim's Idempotency-Key;
        returns the whole trail once the call is complete."""
        reply = None
        try:
            encoded_step = _dumps(step)
            if claim.idempotency is not None and answer is not None:
                recorded = {**answer, "session_summary": None}
                reply = (claim.idempotency.digest,
                         ("1" if session.is_complete else "0") + claim.idempotency.fingerprint
                         + _dumps(recorded))
        except (ValueError, UnicodeEncodeError) as exc:
            raise UnstorableStep(str(exc)) from None
        steps = await self.backend.commit(
            claim.keys,
            claim.token,
            self.ttl_seconds,
            encoded_step,
            session.to_fields(),
            return_steps=session.is_complete,
            reply=reply,
        )
        if steps is None:
            raise ClaimLost(
                f"the claim on call {claim.call_identify_id} expired before the step was "
                "recorded; nothing of this turn was written"
            )
        return [_loads(s) for s in steps] if session.is_complete else None

    async def release(self, claim: Claim) -> None:
        await self.backend.release(claim.keys, claim.token)

    async def get(self, call_identify_id: str) -> tuple[Session, list[dict[str, Any]]] | None:
        state, steps = await self.backend.read(CallKeys.of(call_identify_id), with_steps=True)
        if not state:
            return None
        return Session.from_fields(call_identify_id, state), [_loads(s) for s in steps]

    async def delete(self, call_identify_id: str) -> bool:
        """End the call: remove every key of it, and leave a marker for the session TTL so
        that a late turn, or a keyed retry of an old one, cannot start it again."""
        return await self.backend.delete(CallKeys.of(call_identify_id), self.ttl_seconds)

    async def close(self) -> None:
        await self.backend.close()


def retry_after_seconds(remaining_ms: int, lease_ms: int) -> int:
    """When the running turn is likely done, in whole seconds (at least one). Most turns take
    milliseconds, a slow agent seconds: a turn that has run for t is likely to need about t
    more, and never more than what is left of its lease."""
    held_ms = max(0, lease_ms - remaining_ms)
    return max(1, min(math.ceil(held_ms / 1000), math.ceil(remaining_ms / 1000)))


def _dumps(value: dict[str, Any]) -> str:
    """Strict: what cannot be read back as JSON (NaN, a lone surrogate) is never written."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not text.isascii():
        text.encode("utf-8")  # raises on a lone surrogate, before anything is sent
    return text


def _loads(text: str) -> Any:
    """Lenient: a non-finite number written before the store refused them reads back as null,
    so no stored step can make a read fail."""
    return json.loads(text, parse_constant=lambda _: None)
