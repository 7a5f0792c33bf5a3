"""Process-wide parts built once from Settings: the flow, the session store and, only where a
route needs it, the A2A client and the orchestrator (read-only functions never import httpx)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator_flows.observe import Observer, SilentObserver
from orchestrator_flows.settings import Settings
from orchestrator_flows.store import Backend, SessionStore

if TYPE_CHECKING:
    from orchestrator_flows.engine import AgentCaller, Orchestrator
    from orchestrator_flows.flow import Flow

logger = logging.getLogger(__name__)


def build_backend(settings: Settings) -> Backend:
    if settings.redis_url is None:
        from orchestrator_flows.store.memory_backend import MemoryBackend

        logger.warning(
            "REDIS_URL is not set: sessions live in an embedded in-memory store in this process "
            "(local runs only; they are lost on exit)"
        )
        return MemoryBackend()
    from orchestrator_flows.store.redis_backend import connect

    return connect(
        settings.redis_url,
        settings.redis_mode,
        socket_timeout=settings.redis_socket_timeout_seconds,
        connect_timeout=settings.redis_connect_timeout_seconds,
        max_connections=settings.redis_max_connections,
        ca_certs=str(settings.redis_ca_certs) if settings.redis_ca_certs else None,
    )


@dataclass
class Runtime:
    settings: Settings
    store: SessionStore
    _flow: Flow | None = field(default=None, repr=False)
    _orchestrator: Orchestrator | None = field(default=None, repr=False)
    agents: AgentCaller | None = field(default=None, repr=False)  # default: the A2A client
    observer: Observer = field(default_factory=SilentObserver, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        backend: Backend | None = None,
        agents: AgentCaller | None = None,
        observer: Observer | None = None,
        with_flow: bool = True,
    ) -> Runtime:
        """`with_flow=False` for the read-only functions, which never route a turn: they skip
        YAML and the flow file altogether."""
        store = SessionStore(
            backend or build_backend(settings),
            ttl_seconds=settings.session_ttl_seconds,
            lease_seconds=settings.claim_lease_seconds,
        )
        runtime = cls(settings, store, agents=agents, observer=observer or SilentObserver())
        if with_flow:
            runtime._flow = settings.load_flow()  # a broken flow file fails start-up, here
        return runtime

    @property
    def flow(self) -> Flow:
        if self._flow is None:
            self._flow = self.settings.load_flow()
        return self._flow

    @property
    def orchestrator(self) -> Orchestrator:
        if self._orchestrator is None:
            from orchestrator_flows.a2a import A2AClient
            from orchestrator_flows.engine import Orchestrator

            if self.agents is None:
                self.agents = A2AClient(self.settings.agent_timeout_seconds)
            from orchestrator_flows.breaker import Breakers

            breakers = Breakers(self.store.backend,
                                probe_seconds=self.settings.agent_timeout_seconds + 1)
            self._orchestrator = Orchestrator(self.flow, self.store, self.agents, self.observer,
                                              max_steps=self.settings.max_steps_per_call,
                                              breakers=breakers)
        return self._orchestrator

    async def aclose(self) -> None:
        close = getattr(self.agents, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            await self.store.close()
