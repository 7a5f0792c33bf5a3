"""The hot path's deadline scope keeps `asyncio.timeout_at`'s contract: its own expiry becomes
TimeoutError, a cancellation from elsewhere stays a cancellation, and a scope left in time
leaves no timer behind."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator_flows.timeouts import deadline_at, deadline_in


async def test_a_deadline_that_passes_raises_timeout_error_on_time() -> None:
    started = time.monotonic()
    scope = deadline_in(0.05)
    with pytest.raises(TimeoutError):
        async with scope:
            await asyncio.sleep(5)
    assert scope.expired()
    assert 0.04 <= time.monotonic() - started < 2


async def test_a_scope_left_in_time_returns_and_its_timer_is_gone() -> None:
    async with deadline_in(0.05) as nothing:
        await asyncio.sleep(0)
    assert nothing is None
    # Past the deadline, the task is not cancelled by a timer left behind.
    await asyncio.sleep(0.1)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_deadline_already_past_fires_at_the_first_await() -> None:
    ran = []

    async def runs() -> None:
        async with deadline_at(asyncio.get_running_loop().time() - 1):
            ran.append("before")
            await asyncio.sleep(1)
            ran.append("after")

    with pytest.raises(TimeoutError):
        await runs()
    assert ran == ["before"]


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def waits() -> None:
        async with deadline_in(30):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(waits())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_and_an_expiry_together_stay_a_cancellation() -> None:
    async def waits() -> None:
        async with deadline_in(0.01):
            try:
                await asyncio.sleep(30)
            finally:
                # Cancelled by the deadline; a second cancel comes from outside meanwhile.
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(waits())


async def test_an_inner_deadline_is_caught_inside_an_outer_one() -> None:
    async with deadline_in(5) as _:
        with pytest.raises(TimeoutError):
            async with deadline_in(0.01):
                await asyncio.sleep(5)
        await asyncio.sleep(0.02)  # the outer scope is still running, not cancelled
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_an_error_inside_passes_through_unchanged() -> None:
    with pytest.raises(KeyError):
        async with deadline_in(5):
            raise KeyError("inside")
