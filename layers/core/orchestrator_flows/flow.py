"""The call flow as data: stages, the intents each stage accepts and the agent serving each intent.

A flow file (YAML; JSON is valid YAML) is validated when it is loaded; any problem raises
`FlowConfigError` naming the file, the line and the problem, so a broken file never starts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator_flows.breaker import BreakerPolicy
from orchestrator_flows.errors import FlowConfigError, IntentNotAllowed
from orchestrator_flows.masking import RULES, Masker, Rule

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
            name: replace(agent, url=_check_url(urls[name], f"AGENT_URL_{name.upper()}"))
            if name in urls
            else agent
            for name, agent in self.agents.items()
        }
        return replace(self, agents=agents)


# --- loading ---------------------------------------------------------------------------------


class _RetrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(3, ge=1, le=10)
    base_delay_ms: int = Field(100, ge=1, le=10_000)
    max_delay_ms: int = Field(1000, ge=1, le=60_000)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.base_delay_ms / 1000,
                           max(self.base_delay_ms, self.max_delay_ms) / 1000)


class _BreakerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failures: int = Field(5, ge=0, le=1000)  # 0: no breaker for this agent
    failure_rate: float = Field(0.5, gt=0, le=1)
    window_seconds: float = Field(30, gt=0, le=3600)
    cooldown_seconds: float = Field(15, gt=0, le=3600)

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(self.failures, self.failure_rate, self.window_seconds,
                             self.cooldown_seconds)


class _AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    a2a_version: A2AVersion | None = None
    retry: _RetrySpec | None = None
    circuit_breaker: _BreakerSpec | None = None


class _StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(strict=True)
    name: str = Field(pattern=STAGE_NAME.pattern)
    intents: dict[str, str]


class _MaskingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = Field(default_factory=lambda: list(RULES))
    otp_stages: list[str] | None = None  # default: AUTHENTICATION, where the flow has it


class _FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: dict[str, _AgentSpec]
    fallback_agent: str
    stages: list[_StageSpec]
    masking: _MaskingSpec | None = None


def default_flow() -> Flow:
    text = resources.files("orchestrator_flows").joinpath("default_flow.yaml").read_text("utf-8")
    return parse_flow(text, source="default_flow.yaml")


def load_flow(path: str | Path) -> Flow:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowConfigError(f"{path}: cannot read flow file: {exc.strerror}") from exc
    return parse_flow(text, source=str(path))


def parse_flow(text: str, source: str) -> Flow:
    data, lines = _load_with_lines(text, source)

    def fail(path: tuple[Any, ...], problem: str) -> FlowConfigError:
        return FlowConfigError(f"{source}:{_line_of(path, lines)}: {problem}")

    try:
        spec = _FlowSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # Prefer a problem at a node that exists (a misspelt key) to one about a missing key.
        first = next((e for e in errors if tuple(e["loc"]) in lines), errors[0])
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise fail(tuple(first["loc"]), f"{where}: {first['msg']}") from None

    for name, agent_spec in spec.agents.items():
        if not AGENT_NAME.match(name):
            raise fail(("agents", name), f"agent name {name!r} must match {AGENT_NAME.pattern}")
        try:
            _check_url(agent_spec.url, f"agents.{name}.url")
        except FlowConfigError as exc:
            raise fail(("agents", name, "url"), str(exc)) from None
    if spec.fallback_agent not in spec.agents:
        raise fail(("fallback_agent",), f"fallback_agent {spec.fallback_agent!r} is not an agent")
    if not spec.stages:
        raise fail(("stages",), "the flow has no stages")

    seen: dict[str, int] = {}
    for index, stage in enumerate(spec.stages):
        at: tuple[Any, ...] = ("stages", index)
        if stage.id != index + 1:
            raise fail(
                (*at, "id"), f"stage ids must be 1, 2, 3 … in order; found {stage.id} at "
                f"position {index + 1}"
            )
        if not stage.intents:
            raise fail((*at, "intents"), f"stage {stage.id} ({stage.name}) has no intents")
        for intent, agent in stage.intents.items():
            if not INTENT_NAME.match(intent):
                raise fail((*at, "intents", intent), f"intent {intent!r} is not a valid name")
            if agent not in spec.agents:
                raise fail(
                    (*at, "intents", intent),
                    f"intent {intent!r} routes to unknown agent {agent!r}",
                )
            if intent in seen:
                raise fail(
                    (*at, "intents", intent),
                    f"duplicate intent {intent!r}: already in stage {seen[intent]}",
                )
            seen[intent] = stage.id

    masking = spec.masking or _MaskingSpec()
    stage_names = {stage.name for stage in spec.stages}
    otp_stages = masking.otp_stages
    if otp_stages is None:
        otp_stages = [name for name in ("AUTHENTICATION",) if name in stage_names]
    for index, name in enumerate(otp_stages):
        if name not in stage_names:
            raise fail(("masking", "otp_stages", index),
                       f"masking.otp_stages: {name!r} is not a stage of the flow")

    return Flow(
        stages=tuple(Stage(s.id, s.name, dict(s.intents)) for s in spec.stages),
        agents={n: Agent(n, a.url, a.a2a_version,
                         a.retry.policy() if a.retry is not None else RetryPolicy(),
                         a.circuit_breaker.policy() if a.circuit_breaker is not None
                         else BreakerPolicy())
                for n, a in spec.agents.items()},
        fallback_agent=spec.fallback_agent,
        source=source,
        masker=Masker.of(masking.rules, otp_stages),
    )


def _check_url(url: str, what: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", url):
        raise FlowConfigError(f"{what}: {url!r} is not an http(s) URL")
    return url


def _line_of(path: tuple[Any, ...], lines: Mapping[tuple[Any, ...], int]) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _load_with_lines(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML into plain data, remembering the line of every node and refusing duplicate keys
    (PyYAML would silently keep the last one, hiding a duplicated intent)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    lines: dict[tuple[Any, ...], int] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            raise FlowConfigError(f"{source}:1: the flow file is empty")

        def build(node: yaml.Node, path: tuple[Any, ...]) -> Any:
            lines[path] = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                result: dict[Any, Any] = {}
                for key_node, value_node in node.value:
                    key = loader.construct_object(key_node, deep=True)
                    if key in result:
                        raise FlowConfigError(
                            f"{source}:{key_node.start_mark.line + 1}: duplicate key {key!r}"
                        )
                    result[key] = build(value_node, (*path, key))
                    lines[(*path, key)] = key_node.start_mark.line + 1  # point at the key
                return result
            if isinstance(node, yaml.SequenceNode):
                return [build(item, (*path, i)) for i, item in enumerate(node.value)]
            return loader.construct_object(node, deep=True)

        return build(root, ()), lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise FlowConfigError(f"{source}:{line}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
