"""What a backend's claim finds: exactly one of five outcomes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Taken:
    """The lease is this turn's; `state` is empty when the call has no session yet."""

    state: dict[str, str]


@dataclass(frozen=True, slots=True)
class Busy:
    """Another turn holds the lease, which lapses in `remaining_ms`."""

    remaining_ms: int


@dataclass(frozen=True, slots=True)
class Queued:
    """The call is busy, or other turns came first: this turn holds its place in the call's
    queue (its ticket; `place` 0 is first in line) and waits to be woken; the lease lapses in
    `remaining_ms` (negative: it is free, and a turn ahead is about to take it)."""

    remaining_ms: int
    place: int = 0


@dataclass(frozen=True, slots=True)
class Recorded:
    """A reply record is filed under the turn's Idempotency-Key (lease not taken), with the
    call's state, and its trail when that reply completed the call."""

    reply: str
    state: dict[str, str]
    steps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ended:
    """The call was ended with DELETE; nothing was taken."""


ClaimResult = Taken | Busy | Queued | Recorded | Ended
