"""The call flow as data: stages, the intents each stage accepts and the agent serving each
intent, and how a turn is routed. Read from a flow file by `flow_file`."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from orchestrator_flows.breaker import BreakerPolicy
from orchestrator_flows.errors import FlowConfigError, IntentNotAllowed
from orchestrator_flows.masking import Masker

A2AVersion = Literal["1.0", "0.3"]
AGENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
INTENT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
STAGE_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a transient agent failure is tried again, all within the step's deadline."""

    attempts: int = 3  # tries in all; 1 never retries
    base_delay_seconds: float = 0.1
    max_delay_seconds: float = 1.0

    def backoff(self, attempt: int) -> float:
        """The pause after try `attempt` (1-based): exponential with full jitter, so agents
        that failed together are not all retried at the same instant."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


@dataclass(frozen=True)
class Agent:
    name: str
    url: str
    a2a_version: A2AVersion | None = None  # None: ask the agent card, default 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


@dataclass(frozen=True)
class Stage:
    id: int
    name: str
    intents: Mapping[str, str]  # intent -> agent name


@dataclass(frozen=True)
class Route:
    """Where one turn goes: the agent, the stage it is handled at, and whether it can advance."""

    agent: Agent
    stage: Stage
    is_fallback: bool


@dataclass(frozen=True)
class Flow:
    stages: tuple[Stage, ...]
    agents: Mapping[str, Agent]
    fallback_agent: str
    source: str = "<default>"
    masker: Masker = field(default_factory=Masker)
    _stage_of_intent: Mapping[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        index = {intent: stage.id for stage in self.stages for intent in stage.intents}
        object.__setattr__(self, "_stage_of_intent", index)

    @property
    def first_stage_id(self) -> int:
        return self.stages[0].id

    @property
    def last_stage_id(self) -> int:
        return self.stages[-1].id

    def stage(self, stage_id: int) -> Stage:
        return self.stages[stage_id - 1]

    def agent_for(self, intent: str) -> Agent:
        """The agent an intent goes to at its own stage (the fallback agent for unknown ones)."""
        stage_id = self._stage_of_intent.get(intent)
        if stage_id is None:
            return self.agents[self.fallback_agent]
        return self.agents[self.stage(stage_id).intents[intent]]

    def route(self, intent: str, current_stage_id: int) -> Route:
        """Route an intent at the call's current stage; refuse intents that belong elsewhere."""
        stage = self.stage(current_stage_id)
        agent_name = stage.intents.get(intent)
        if agent_name is not None:
            return Route(self.agents[agent_name], stage, is_fallback=False)
        if intent in self._stage_of_intent:
            raise IntentNotAllowed(
                f"intent {intent!r} belongs to stage {self._stage_of_intent[intent]}, "
                f"but the call is at stage {stage.id} ({stage.name})",
                current_flow_id=stage.id,
                allowed_intents=sorted(stage.intents),
            )
        # Unknown intents never advance: otherwise one could skip authentication.
        return Route(self.agents[self.fallback_agent], stage, is_fallback=True)

    def with_agent_urls(self, urls: Mapping[str, str]) -> Flow:
        """The same flow with some agents' URLs replaced (AGENT_URL_<NAME>)."""
        unknown = sorted(set(urls) - set(self.agents))
        if unknown:
            raise FlowConfigError(
                f"{self.source}: AGENT_URL_ override names unknown agent(s) {unknown}; "
                f"known: {sorted(self.agents)}"
            )
        agents = {
            name: replace(agent, url=check_url(urls[name], f"AGENT_URL_{name.upper()}"))
            if name in urls
            else agent
            for name, agent in self.agents.items()
        }
        return replace(self, agents=agents)


def check_url(url: str, what: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", url):
        raise FlowConfigError(f"{what}: {url!r} is not an http(s) URL")
    return url
