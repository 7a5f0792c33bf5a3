"""The call flow as data: stages, the intents each stage accepts and the agent serving each
intent, and how a turn is routed. Read from a flow file by `flow_file`."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from orchestrator_flows.breaker import BreakerPolicy
from orchestrator_flows.errors import FlowConfigError, IntentNotAllowed
from orchestrator_flows.escalation import EscalationPolicy
from orchestrator_flows.intents import IntentClassifier
from orchestrator_flows.masking import Masker
from orchestrator_flows.transitions import END, Outcome, Transition, target

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


SecretSource = Literal["secretsmanager", "ssm"]
SECRET_REF = re.compile(r"^(secretsmanager|ssm):(\S{1,2048})$")


@dataclass(frozen=True)
class SecretRef:
    """Where a credential is kept, never the credential: a Secrets Manager secret (name or
    ARN) or an SSM Parameter Store parameter (SecureString), written `secretsmanager:<id>` or
    `ssm:<name>` in the flow file."""

    source: SecretSource
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


def secret_ref(text: str, what: str) -> SecretRef:
    found = SECRET_REF.match(text)
    if found is None:
        raise FlowConfigError(
            f"{what}: {text!r} is not a secret reference (secretsmanager:<name or ARN> or "
            f"ssm:<parameter name>)")
    source: SecretSource = "secretsmanager" if found.group(1) == "secretsmanager" else "ssm"
    return SecretRef(source, found.group(2))


@dataclass(frozen=True)
class BearerAuth:
    """`Authorization: Bearer <token>`, the token read from a secret (A2A's HTTP auth scheme
    `bearer`)."""

    secret: SecretRef


@dataclass(frozen=True)
class ApiKeyAuth:
    """An API key in a header (A2A's `apiKey` scheme, location header), read from a secret."""

    secret: SecretRef
    header: str = "X-API-Key"


@dataclass(frozen=True)
class OAuth2ClientCredentials:
    """OAuth 2.0 client credentials (RFC 6749 §4.4): a token from `token_url`, the client
    authenticated with HTTP Basic, its secret read from a secret; sent as a bearer token."""

    token_url: str
    client_id: str
    client_secret: SecretRef
    scopes: tuple[str, ...] = ()


HeaderAuth = BearerAuth | ApiKeyAuth | OAuth2ClientCredentials


@dataclass(frozen=True)
class MutualTls:
    """A client certificate for TLS: the secret holds JSON with `certificate` and
    `private_key` (PEM), and optionally `ca_certificate` (PEM) to trust the agent by."""

    secret: SecretRef


@dataclass(frozen=True)
class StreamPolicy:
    """How a streaming agent is called. `enabled`: with SendStreamingMessage (message/stream)
    when its card says it streams; off, always with SendMessage. `idle_seconds`: the longest
    wait for the stream's next event (within the step's deadline) before it counts as
    stalled."""

    enabled: bool = True
    idle_seconds: float = 10.0


VERSION_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MAX_WEIGHT = 10_000


@dataclass(frozen=True)
class AgentVersion:
    """One deployment of an agent: where it answers, and its share of new calls (0: drained,
    serving only the calls that already hold it)."""

    name: str
    url: str
    weight: int
    a2a_version: A2AVersion | None = None


@dataclass(frozen=True)
class Agent:
    name: str
    url: str
    a2a_version: A2AVersion | None = None  # None: ask the agent card, default 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    auth: HeaderAuth | None = None
    mtls: MutualTls | None = None
    versions: tuple[AgentVersion, ...] = ()  # none: one deployment, at `url`
    version: str | None = None  # set on the agent as one of its versions (`at`)
    stream: StreamPolicy = field(default_factory=StreamPolicy)
    _at: Mapping[str, Agent] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Each version as an agent of its own, built once: the client keys its pools and
        # credentials by the agent it is given.
        object.__setattr__(self, "_at", {
            version.name: replace(self, url=version.url, versions=(), version=version.name,
                                  a2a_version=version.a2a_version or self.a2a_version)
            for version in self.versions})

    def at(self, version: str) -> Agent:
        """The agent as its version `version` (which must be one of `versions`)."""
        return self._at[version]

    def holds(self, version: str | None) -> bool:
        return version is not None and version in self._at

    def pick(self, call_identify_id: str) -> str:
        """The version a call is given on its first turn to this agent: by weight, and the
        same for the same call on every instance and after every restart (a hash of the call
        and the agent, not a random draw)."""
        total = sum(version.weight for version in self.versions)
        digest = hashlib.sha256(f"{self.name}\n{call_identify_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % total
        for version in self.versions:
            point -= version.weight
            if point < 0:
                return version.name
        raise AssertionError("weights sum to total")

    @property
    def breaker_key(self) -> str:
        """The circuit a call counts on: each version has its own, so a failing canary does not
        open the circuit of the version serving most calls."""
        return self.name if self.version is None else f"{self.name}@{self.version}"

    def secrets(self) -> tuple[SecretRef, ...]:
        """Every secret the agent's credentials are read from."""
        found = []
        if isinstance(self.auth, BearerAuth | ApiKeyAuth):
            found.append(self.auth.secret)
        elif isinstance(self.auth, OAuth2ClientCredentials):
            found.append(self.auth.client_secret)
        if self.mtls is not None:
            found.append(self.mtls.secret)
        return tuple(found)


# How a turn sent to several agents at once succeeds: when every one completes (`all`), when
# one does (`any`), or with the first to complete, the others then no longer awaited (`first`).
SucceedWhen = Literal["all", "any", "first"]


@dataclass(frozen=True)
class Together:
    """An intent served by several agents called at once, within the one step deadline."""

    agents: tuple[str, ...]  # the first is the lead (as `intents` names it)
    succeed_when: SucceedWhen = "all"


@dataclass(frozen=True)
class Stage:
    id: int
    name: str
    intents: Mapping[str, str]  # intent -> agent name (the lead, for an intent of several)
    # Failed or input-required turns the call may have at the stage; the last one escalates.
    max_attempts: int | None = None
    max_visits: int | None = None  # times the call may enter the stage; one more escalates
    transitions: tuple[Transition, ...] = ()
    queue: str | None = None  # where a handoff from this stage goes (else the flow's queue)
    together: Mapping[str, Together] = field(default_factory=dict)  # intent -> its agents


@dataclass(frozen=True)
class Route:
    """Where one turn goes: the agent, the stage it is handled at, and whether it can advance;
    with `also`, the other agents called at the same time and how the turn succeeds."""

    agent: Agent
    stage: Stage
    is_fallback: bool
    also: tuple[Agent, ...] = ()
    succeed_when: SucceedWhen = "all"

    @property
    def agents(self) -> tuple[Agent, ...]:
        return (self.agent, *self.also)


@dataclass(frozen=True)
class Flow:
    stages: tuple[Stage, ...]
    agents: Mapping[str, Agent]
    fallback_agent: str
    source: str = "<default>"
    masker: Masker = field(default_factory=Masker)
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    locale: str = "en"  # of a turn that does not say its own
    classifier: IntentClassifier = field(default_factory=lambda: IntentClassifier({}))
    # A turn without an intent this short (in words) continues its stage's open task.
    follow_up_words: int = 8
    classifier_agent: str | None = None  # an A2A agent asked to read words, before the offline
    classifier_timeout_seconds: float = 2.0
    _stage_of_intent: Mapping[str, int] = field(default_factory=dict, repr=False)
    _stage_named: Mapping[str, Stage] = field(default_factory=dict, repr=False)
    _onward: tuple[Transition, ...] = field(default=(), repr=False)  # each stage's default

    def __post_init__(self) -> None:
        index = {intent: stage.id for stage in self.stages for intent in stage.intents}
        object.__setattr__(self, "_stage_of_intent", index)
        object.__setattr__(self, "_stage_named", {stage.name: stage for stage in self.stages})
        names = [stage.name for stage in self.stages]
        object.__setattr__(self, "_onward", tuple(
            Transition("completed", following) for following in [*names[1:], END]))

    @property
    def first_stage_id(self) -> int:
        return self.stages[0].id

    @property
    def last_stage_id(self) -> int:
        return self.stages[-1].id

    def stage(self, stage_id: int) -> Stage:
        return self.stages[stage_id - 1]

    def stage_named(self, name: str) -> Stage:
        return self._stage_named[name]

    def after(self, stage: Stage, outcome: Outcome, data: Mapping[str, Any]) -> Transition | None:
        """Where the call goes after a turn at `stage` came to `outcome` (its transitions, else
        completed: the next stage or END); None: it stays."""
        if not stage.transitions:  # the default, decided without building anything
            return self._onward[stage.id - 1] if outcome == "completed" else None
        following = self.stages[stage.id].name if stage.id < len(self.stages) else END
        return target(stage.transitions, outcome, data, following)

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
            together = stage.together.get(intent)
            if together is None:
                return Route(self.agents[agent_name], stage, is_fallback=False)
            return Route(self.agents[agent_name], stage, False,
                         tuple(self.agents[name] for name in together.agents[1:]),
                         together.succeed_when)
        if intent in self._stage_of_intent:
            raise IntentNotAllowed(
                f"intent {intent!r} belongs to stage {self._stage_of_intent[intent]}, "
                f"but the call is at stage {stage.id} ({stage.name})",
                current_flow_id=stage.id,
                allowed_intents=sorted(stage.intents),
            )
        # Unknown intents never advance: otherwise one could skip authentication.
        return Route(self.agents[self.fallback_agent], stage, is_fallback=True)

    def insecure_urls(self) -> list[tuple[str, str]]:
        """Each agent URL and token URL on plain http:// to a host other than loopback:
        (where, URL)."""
        found = [(f"agent {agent.name}", agent.url) for agent in self.agents.values()
                 if not agent.versions]
        found += [(f"agent {agent.name} version {version.name}", version.url)
                  for agent in self.agents.values() for version in agent.versions]
        found += [(f"agent {agent.name}'s token endpoint", agent.auth.token_url)
                  for agent in self.agents.values()
                  if isinstance(agent.auth, OAuth2ClientCredentials)]
        return [(where, url) for where, url in found if not _secure(url)]

    def with_agent_urls(self, urls: Mapping[str, str]) -> Flow:
        """The same flow with some agents' URLs replaced (AGENT_URL_<NAME>)."""
        unknown = sorted(set(urls) - set(self.agents))
        if unknown:
            raise FlowConfigError(
                f"{self.source}: AGENT_URL_ override names unknown agent(s) {unknown}; "
                f"known: {sorted(self.agents)}"
            )
        versioned = sorted(name for name in urls if self.agents[name].versions)
        if versioned:
            raise FlowConfigError(
                f"{self.source}: AGENT_URL_ cannot override agent(s) {versioned}: they have "
                "versions, each with its own url in the flow file")
        agents = {
            name: replace(agent, url=check_url(urls[name], f"AGENT_URL_{name.upper()}"))
            if name in urls
            else agent
            for name, agent in self.agents.items()
        }
        return replace(self, agents=agents)


_LOOPBACK = re.compile(r"^http://(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?(?:/|$)",
                       re.IGNORECASE)


def _secure(url: str) -> bool:
    """https, or http to this machine's loopback (a local run)."""
    return url.lower().startswith("https://") or _LOOPBACK.match(url) is not None


def check_url(url: str, what: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", url):
        raise FlowConfigError(f"{what}: {url!r} is not an http(s) URL")
    return url
