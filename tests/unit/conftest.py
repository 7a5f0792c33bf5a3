"""Unit fixtures: the engine and API over the embedded backend and scripted agents."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from orchestrator_flows.api import create_app
from orchestrator_flows.engine import Orchestrator
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from orchestrator_flows.store.memory_backend import MemoryBackend
from tests.support.scripted import ScriptedAgents


@pytest.fixture
def agents() -> ScriptedAgents:
    return ScriptedAgents()


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def runtime(backend: MemoryBackend, agents: ScriptedAgents) -> Runtime:
    return Runtime.build(Settings(), storage=Storage.embedded(backend), agents=agents)


@pytest.fixture
def orchestrator(runtime: Runtime) -> Orchestrator:
    return runtime.turns


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client
