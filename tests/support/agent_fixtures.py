"""pytest fixtures serving real A2A agents on free loopback ports.

The ten demo agents run on their own event loop in a background thread, as remote agents would:
a busy orchestrator loop in the test must not stall them (nor they it)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from orchestrator_flows.cli import serving
from orchestrator_flows.demo_agents import AGENT_NAMES, build_agent_app


class BackgroundLoop:
    """An event loop in a daemon thread; coroutines are submitted from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        """Cancel what the agents left running and let it finish, then stop the loop. Tasks left
        suspended would be finalised later by the garbage collector in another thread, where the
        a2a-sdk's queue shutdown can block on a lock and hang the interpreter at exit."""
        self.run(_cancel_others(), timeout=10)
        self.run(self.loop.shutdown_asyncgens(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def _cancel_others() -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@pytest.fixture(scope="session")
def demo_agent_urls() -> Iterator[dict[str, str]]:
    """The ten demo agents, each at its own origin, served from a background thread."""
    background = BackgroundLoop()
    stack = contextlib.AsyncExitStack()

    async def start() -> dict[str, str]:
        urls = {}
        for name in AGENT_NAMES:
            urls[name] = await stack.enter_async_context(
                serving(lambda url, name=name: build_agent_app(name, url))  # type: ignore[misc]
            )
        return urls

    try:
        yield background.run(start())
    finally:
        background.run(stack.aclose())
        background.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[str], Any]], Any]]:
    """Serve ASGI apps in the test's own loop for one test: `url = await serve(lambda url: app)`."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(make_app: Callable[[str], Any]) -> str:
            url: str = await stack.enter_async_context(serving(make_app))
            return url

        yield start
