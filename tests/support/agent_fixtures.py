"""pytest fixtures serving real A2A agents on free loopback ports.

The ten demo agents run in a process of their own (`agent_process.py`), as remote agents would:
a busy orchestrator in the test must not stall them, nor they it. (In one process they shared a
GIL: a burst of 200 calls spent more of it in the a2a-sdk agents than in the orchestrator.)
Agents with scripted behaviours are served in the test's own loop (`serve`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from orchestrator_flows.local.serving import serving
from tests.support.agent_process import agent_process


@pytest.fixture(scope="session")
def demo_agent_urls() -> Iterator[dict[str, str]]:
    """The ten demo agents, each at its own origin, served by a child process."""
    with agent_process() as urls:
        yield urls


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[str], Any]], Any]]:
    """Serve ASGI apps in the test's own loop for one test: `url = await serve(lambda url: app)`."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(make_app: Callable[[str], Any]) -> str:
            url: str = await stack.enter_async_context(serving(make_app))
            return url

        yield start
