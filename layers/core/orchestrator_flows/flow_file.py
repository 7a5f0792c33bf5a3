"""A flow file (YAML; JSON is valid YAML) read into a `Flow`, validated as it is loaded.

Every problem is reported at once, one line each, in the file's words and at its line:
`<file>:<line>: <where>: <problem>`; a file with any problem raises FlowConfigError, so a
broken file never starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from orchestrator_flows.breaker import BreakerPolicy
from orchestrator_flows.errors import FlowConfigError
from orchestrator_flows.escalation import DEFAULT_QUEUE, EscalationPolicy
from orchestrator_flows.flow import (
    AGENT_NAME,
    INTENT_NAME,
    MAX_WEIGHT,
    STAGE_NAME,
    VERSION_NAME,
    A2AVersion,
    Agent,
    AgentVersion,
    ApiKeyAuth,
    BearerAuth,
    Flow,
    HeaderAuth,
    MutualTls,
    OAuth2ClientCredentials,
    RetryPolicy,
    Stage,
    StreamPolicy,
    SucceedWhen,
    Together,
    check_url,
    secret_ref,
)
from orchestrator_flows.intents import IntentClassifier
from orchestrator_flows.masking import RULES, Masker, Rule
from orchestrator_flows.transitions import (
    ESCALATION,
    TERMINALS,
    Condition,
    Node,
    Outcome,
    Transition,
    check_graph,
)

Path_ = tuple[Any, ...]  # a node's place in the document: keys and indexes


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


# An HTTP header name (RFC 9110 token characters).
_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
# What each kind of header auth needs, and what it may have.
_AUTH_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "bearer": ({"secret"}, set()),
    "api_key": ({"secret"}, {"header"}),
    "oauth2_client_credentials": ({"token_url", "client_id", "client_secret"}, {"scopes"}),
}


class _AuthSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["bearer", "api_key", "oauth2_client_credentials"]
    secret: str | None = None
    header: str | None = Field(None, pattern=_HEADER_NAME)
    token_url: str | None = None
    client_id: str | None = Field(None, min_length=1, max_length=256)
    client_secret: str | None = None
    scopes: list[str] | None = None

    def given(self) -> set[str]:
        return {key for key in self.model_fields_set if key != "type"}


class _MtlsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: str


class _VersionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    url: str
    weight: int = Field(strict=True, ge=0, le=MAX_WEIGHT)
    a2a_version: A2AVersion | None = None


class _StreamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, strict=True)
    idle_seconds: float = Field(10.0, gt=0, le=600)


class _AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = None
    versions: list[_VersionSpec] | None = None
    a2a_version: A2AVersion | None = None
    retry: _RetrySpec | None = None
    circuit_breaker: _BreakerSpec | None = None
    auth: _AuthSpec | None = None
    mtls: _MtlsSpec | None = None
    streaming: _StreamSpec | None = None


# A queue a handoff goes to (an Amazon Connect queue name or ARN fits), a locale (BCP 47).
_QUEUE = r"^[A-Za-z0-9_.:/@+-]{1,256}$"
_LOCALE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$"
MAX_STAGES = 64
MAX_CAP = 100  # the largest max_attempts or max_visits
DEFAULT_ESCALATION_INTENTS = ("escalate",)


class _TransitionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Not `on`: YAML 1.1 reads a key `on` as the boolean true.
    outcome: Outcome = "completed"
    when: dict[str, Any] | None = Field(None, max_length=16)
    to: str
    queue: str | None = Field(None, pattern=_QUEUE)

    @model_validator(mode="before")
    @classmethod
    def _no_yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and True in data:
            raise ValueError("a key `on` (or yes) is read by YAML as true: write `outcome:`")
        return data


class _TogetherSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: list[str] = Field(min_length=2, max_length=8)
    succeed_when: SucceedWhen = "all"


class _StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(strict=True)
    name: str = Field(pattern=STAGE_NAME.pattern)
    intents: dict[str, str | _TogetherSpec]
    max_attempts: int | None = Field(None, strict=True, ge=1, le=MAX_CAP)
    max_visits: int | None = Field(None, strict=True, ge=1, le=MAX_CAP)
    queue: str | None = Field(None, pattern=_QUEUE)
    transitions: list[_TransitionSpec] = Field(default_factory=list, max_length=32)
    # intent -> locale -> example utterances, for turns that come without an intent
    examples: dict[str, dict[str, list[Annotated[str, StringConstraints(
        min_length=1, max_length=500)]]]] = Field(default_factory=dict)


class _ClassifierSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(default=0.35, gt=0, le=1)
    margin: float = Field(default=0.04, ge=0, le=1)
    follow_up_words: int = Field(default=8, ge=0, le=100)
    # An A2A agent asked instead (the offline classifier stands in when it fails), within
    # its own deadline; the turn's agent then has what is left of the step's.
    agent: str | None = None
    agent_timeout_seconds: float = Field(default=2.0, gt=0, le=5)


class _EscalationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # None: `escalate`, unless a stage of the flow already routes an intent of that name.
    intents: list[str] | None = Field(default=None, max_length=32)
    phrases: dict[str, list[Annotated[str, StringConstraints(min_length=1, max_length=200)]]] = (
        Field(default_factory=dict))
    queue: str = Field(default=DEFAULT_QUEUE, pattern=_QUEUE)


class _MaskingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = Field(default_factory=lambda: list(RULES))
    otp_stages: list[str] | None = None  # default: AUTHENTICATION, where the flow has it


class _FlowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: dict[str, _AgentSpec]
    fallback_agent: str
    stages: list[_StageSpec] = Field(max_length=MAX_STAGES)
    masking: _MaskingSpec | None = None
    escalation: _EscalationSpec = Field(default_factory=lambda: _EscalationSpec())
    locale: str = Field(default="en", pattern=_LOCALE)
    classifier: _ClassifierSpec = Field(default_factory=lambda: _ClassifierSpec())


# Pydantic's words for a shape problem, in the file's words (never a model's class name).
_SHAPE_WORDS = {
    "missing": "is required",
    "extra_forbidden": "is not a known key",
    "model_type": "must be a mapping of keys",
    "model_attributes_type": "must be a mapping of keys",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
}


@dataclass
class _Problems:
    """Problems found so far, each with its line: those at a node the file has (a misspelt
    key, a wrong value) first, in the file's order, then those about what it lacks."""

    source: str
    lines: Mapping[Path_, int]
    found: list[tuple[bool, int, str]] = field(default_factory=list)

    def add(self, path: Path_, problem: str) -> None:
        self.found.append((path not in self.lines, _line_of(path, self.lines), problem))

    def error(self) -> FlowConfigError:
        listed = sorted(set(self.found))
        return FlowConfigError("\n".join(f"{self.source}:{line}: {problem}"
                                         for _, line, problem in listed))


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
    problems = _Problems(source, lines)
    spec = _shape(data, problems)
    if spec is None:
        raise problems.error()
    _check_agents(spec, problems)
    _check_stages(spec, problems)
    stages = _stages(spec, problems)
    _check_escalation(spec, problems)
    examples = _examples(spec, problems)
    otp_stages = _otp_stages(spec, problems)
    if problems.found:
        raise problems.error()
    masking = spec.masking or _MaskingSpec()
    escalation = spec.escalation
    return Flow(
        stages=stages,
        agents={name: _agent(name, agent) for name, agent in spec.agents.items()},
        fallback_agent=spec.fallback_agent,
        source=source,
        masker=Masker.of(masking.rules, otp_stages),
        escalation=EscalationPolicy(
            frozenset(_escalation_intents(spec)),
            {locale: tuple(phrases) for locale, phrases in escalation.phrases.items()},
            escalation.queue),
        locale=spec.locale,
        classifier=IntentClassifier(examples, spec.classifier.threshold,
                                    spec.classifier.margin),
        follow_up_words=spec.classifier.follow_up_words,
        classifier_agent=spec.classifier.agent,
        classifier_timeout_seconds=spec.classifier.agent_timeout_seconds,
    )


def _shape(data: Any, problems: _Problems) -> _FlowSpec | None:
    """The document as a typed spec, or None with every shape problem added."""
    try:
        return _FlowSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            path = tuple(error["loc"])
            where = ".".join(str(p) for p in path) or "the flow file"
            problems.add(path, f"{where}: {_SHAPE_WORDS.get(error['type'], error['msg'])}")
        return None


def _check_agents(spec: _FlowSpec, problems: _Problems) -> None:
    for name, agent in spec.agents.items():
        if not AGENT_NAME.match(name):
            problems.add(("agents", name),
                         f"agent name {name!r} must match {AGENT_NAME.pattern}")
        _check_where(name, agent, problems)
        _check_auth(name, agent, problems)
    if spec.fallback_agent not in spec.agents:
        problems.add(("fallback_agent",),
                     f"fallback_agent {spec.fallback_agent!r} is not an agent")
    if spec.classifier.agent is not None and spec.classifier.agent not in spec.agents:
        problems.add(("classifier", "agent"),
                     f"classifier.agent {spec.classifier.agent!r} is not an agent")


def _check_where(name: str, agent: _AgentSpec, problems: _Problems) -> None:
    """An agent has a url, or versions (each named once, with its url and weight, some weight
    above 0), not both."""
    at: Path_ = ("agents", name)
    if (agent.url is None) == (agent.versions is None):
        problems.add(at, f"agents.{name}: needs a url or versions, not both")
        return
    if agent.url is not None:
        try:
            check_url(agent.url, f"agents.{name}.url")
        except FlowConfigError as exc:
            problems.add((*at, "url"), str(exc))
        return
    versions = agent.versions or []
    seen: set[str] = set()
    for index, version in enumerate(versions):
        where = (*at, "versions", index)
        if not VERSION_NAME.match(version.name):
            problems.add((*where, "name"), f"agents.{name}.versions: version name "
                         f"{version.name!r} must match {VERSION_NAME.pattern}")
        if version.name in seen:
            problems.add((*where, "name"),
                         f"agents.{name}.versions: duplicate version {version.name!r}")
        seen.add(version.name)
        try:
            check_url(version.url, f"agents.{name}.versions.{version.name}.url")
        except FlowConfigError as exc:
            problems.add((*where, "url"), str(exc))
    if not any(version.weight > 0 for version in versions):
        problems.add((*at, "versions"),
                     f"agents.{name}.versions: no version has a weight above 0")


def _urls(agent: _AgentSpec) -> list[str]:
    return [agent.url] if agent.url is not None else [v.url for v in agent.versions or []]


def _check_auth(name: str, agent: _AgentSpec, problems: _Problems) -> None:
    """Each kind of auth has what it needs and nothing it would ignore; every secret is a
    reference, never a value; a token URL is https (or loopback http, for local runs)."""
    at: Path_ = ("agents", name, "auth")
    auth = agent.auth
    if auth is not None:
        needed, allowed = _AUTH_KEYS[auth.type]
        for key in sorted(needed - auth.given()):
            problems.add(at, f"agents.{name}.auth: {auth.type} needs {key}")
        for key in sorted(auth.given() - needed - allowed):
            problems.add((*at, key), f"agents.{name}.auth.{key}: not used by {auth.type}")
        for key in ("secret", "client_secret"):
            value = getattr(auth, key)
            if value is not None:
                try:
                    secret_ref(value, f"agents.{name}.auth.{key}")
                except FlowConfigError as exc:
                    problems.add((*at, key), str(exc))
        if auth.token_url is not None:
            try:
                check_url(auth.token_url, f"agents.{name}.auth.token_url")
            except FlowConfigError as exc:
                problems.add((*at, "token_url"), str(exc))
    if agent.mtls is not None:
        try:
            secret_ref(agent.mtls.secret, f"agents.{name}.mtls.secret")
        except FlowConfigError as exc:
            problems.add(("agents", name, "mtls", "secret"), str(exc))
        if not all(url.startswith("https://") for url in _urls(agent)):
            problems.add(("agents", name, "mtls"),
                         f"agents.{name}.mtls: a client certificate needs an https:// url")


def _check_stages(spec: _FlowSpec, problems: _Problems) -> None:
    if not spec.stages:
        problems.add(("stages",), "the flow has no stages")
    seen: dict[str, int] = {}
    for index, stage in enumerate(spec.stages):
        at: Path_ = ("stages", index)
        if stage.id != index + 1:
            problems.add((*at, "id"), f"stage ids must be 1, 2, 3 … in order; found "
                         f"{stage.id} at position {index + 1}")
        if not stage.intents:
            problems.add((*at, "intents"), f"stage {stage.id} ({stage.name}) has no intents")
        for intent, served in stage.intents.items():
            where = (*at, "intents", intent)
            if not INTENT_NAME.match(intent):
                problems.add(where, f"intent {intent!r} is not a valid name")
            names = [served] if isinstance(served, str) else served.agents
            for agent in names:
                if agent not in spec.agents:
                    problems.add(where, f"intent {intent!r} routes to unknown agent {agent!r}")
            if len(set(names)) != len(names):
                problems.add(where, f"intent {intent!r} names an agent twice")
            if intent in seen:
                problems.add(where, f"duplicate intent {intent!r}: already in stage "
                             f"{seen[intent]}")
            seen.setdefault(intent, stage.id)


def _stages(spec: _FlowSpec, problems: _Problems) -> tuple[Stage, ...]:
    """The stages with their transitions, once the graph they make is checked: every target
    exists, every stage can be reached, every loop is capped (`transitions.check_graph`)."""
    stages = []
    for index, stage in enumerate(spec.stages):
        at: Path_ = ("stages", index)
        if stage.name in TERMINALS:
            problems.add((*at, "name"), f"{stage.name} names the end of a call, not a stage")
        transitions = []
        for position, transition in enumerate(stage.transitions):
            where = (*at, "transitions", position)
            if transition.queue is not None and transition.to != ESCALATION:
                problems.add((*where, "queue"), f"stage {stage.name}: a queue is only for a "
                             f"transition to {ESCALATION}")
            conditions = _conditions(transition.when or {}, where, problems)
            transitions.append(Transition(transition.outcome, transition.to, conditions,
                                          transition.queue))
        stages.append(Stage(
            stage.id, stage.name,
            {intent: served if isinstance(served, str) else served.agents[0]
             for intent, served in stage.intents.items()},
            stage.max_attempts, stage.max_visits, tuple(transitions), stage.queue,
            {intent: Together(tuple(served.agents), served.succeed_when)
             for intent, served in stage.intents.items() if not isinstance(served, str)}))
    seen: dict[str, int] = {}
    for index, stage in enumerate(spec.stages):
        if stage.name in seen:
            problems.add(("stages", index, "name"), f"duplicate stage name {stage.name!r}: "
                         f"already stage {seen[stage.name]}")
        seen.setdefault(stage.name, stage.id)
    if len(seen) == len(stages) and stages:
        for found in check_graph([Node(s.name, s.transitions, s.max_attempts, s.max_visits)
                                  for s in stages]):
            path: Path_ = ("stages", found.stage)
            if found.transition is not None:
                path = (*path, "transitions", found.transition, "to")
            problems.add(path, found.problem)
    return tuple(stages)


_CONDITION_KEYS = {"equals", "in", "exists"}


def _conditions(when: Mapping[str, Any], at: Path_, problems: _Problems
                ) -> tuple[Condition, ...]:
    """`when: {<dotted path in the agent's data>: <value> | {equals: v} | {in: [v, …]} |
    {exists: true|false}}`, values being strings, numbers, booleans or null."""
    found = []
    for key, wanted in when.items():
        where = (*at, "when", key)
        path = tuple(str(key).split("."))
        if not all(path) or len(path) > 8:
            problems.add(where, f"when: {key!r} is not a dotted path into the agent's data")
            continue
        if not isinstance(wanted, dict):
            wanted = {"equals": wanted}
        test = set(wanted)
        if len(test) != 1 or not test <= _CONDITION_KEYS:
            problems.add(where, f"when.{key}: a value, or one of {{equals: v}}, {{in: [v, …]}}, "
                         "{exists: true|false}")
            continue
        (kind, value), = wanted.items()
        if kind == "exists" and isinstance(value, bool):
            found.append(Condition(path, exists=value))
        elif kind == "in" and isinstance(value, list) and all(map(_scalar, value)):
            found.append(Condition(path, one_of=tuple(value)))
        elif kind == "equals" and _scalar(value):
            found.append(Condition(path, equals=value))
        else:
            problems.add(where, f"when.{key}.{kind}: "
                         + {"exists": "true or false", "in": "a list of plain values"}.get(
                             kind, "a plain value (string, number, boolean or null)"))
    return tuple(found)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


MAX_EXAMPLES = 5000


def _examples(spec: _FlowSpec, problems: _Problems) -> dict[str, dict[str, list[str]]]:
    """Each stage's example utterances, as locale -> intent -> utterances; each example names
    an intent of its own stage, in a locale."""
    found: dict[str, dict[str, list[str]]] = {}
    count = 0
    for index, stage in enumerate(spec.stages):
        for intent, by_locale in stage.examples.items():
            where: Path_ = ("stages", index, "examples", intent)
            if intent not in stage.intents:
                problems.add(where, f"stage {stage.name}: examples of {intent!r}, which is not "
                             "an intent of the stage")
                continue
            for locale, texts in by_locale.items():
                if not re.match(_LOCALE, locale):
                    problems.add((*where, locale), f"stage {stage.name}: examples of {intent!r}:"
                                 f" {locale!r} is not a locale (en, es, en-US …)")
                    continue
                count += len(texts)
                found.setdefault(locale, {}).setdefault(intent, []).extend(texts)
    if count > MAX_EXAMPLES:
        problems.add(("stages",), f"the flow has {count} example utterances; at most "
                     f"{MAX_EXAMPLES}")
    return found


def _escalation_intents(spec: _FlowSpec) -> list[str]:
    """The intents that ask for a person: as the file says, or `escalate` where no stage of a
    flow written before escalation existed routes an intent of that name."""
    if spec.escalation.intents is not None:
        return spec.escalation.intents
    routed = {intent for stage in spec.stages for intent in stage.intents}
    return [intent for intent in DEFAULT_ESCALATION_INTENTS if intent not in routed]


def _check_escalation(spec: _FlowSpec, problems: _Problems) -> None:
    stage_intents = {intent: stage.id for stage in spec.stages for intent in stage.intents}
    for index, intent in enumerate(spec.escalation.intents or ()):
        where = ("escalation", "intents", index)
        if not INTENT_NAME.match(intent):
            problems.add(where, f"escalation.intents: {intent!r} is not a valid intent name")
        elif intent in stage_intents:
            problems.add(where, f"escalation.intents: {intent!r} is already an intent of stage "
                         f"{stage_intents[intent]}")
    for locale in spec.escalation.phrases:
        if not re.match(_LOCALE, locale):
            problems.add(("escalation", "phrases", locale),
                         f"escalation.phrases: {locale!r} is not a locale (en, es, en-US …)")


def _otp_stages(spec: _FlowSpec, problems: _Problems) -> list[str]:
    stage_names = {stage.name for stage in spec.stages}
    otp_stages = (spec.masking or _MaskingSpec()).otp_stages
    if otp_stages is None:
        return [name for name in ("AUTHENTICATION",) if name in stage_names]
    for index, name in enumerate(otp_stages):
        if name not in stage_names:
            problems.add(("masking", "otp_stages", index),
                         f"masking.otp_stages: {name!r} is not a stage of the flow")
    return otp_stages


def _agent(name: str, spec: _AgentSpec) -> Agent:
    versions = tuple(AgentVersion(v.name, v.url, v.weight, v.a2a_version)
                     for v in spec.versions or ())
    # A versioned agent's own url is its first version's (what `serve` and logs show).
    url = spec.url if spec.url is not None else versions[0].url
    return Agent(
        name, url, spec.a2a_version,
        spec.retry.policy() if spec.retry is not None else RetryPolicy(),
        spec.circuit_breaker.policy() if spec.circuit_breaker is not None else BreakerPolicy(),
        _auth(name, spec.auth) if spec.auth is not None else None,
        MutualTls(secret_ref(spec.mtls.secret, f"agents.{name}.mtls.secret"))
        if spec.mtls is not None else None,
        versions,
        stream=StreamPolicy(spec.streaming.enabled, spec.streaming.idle_seconds)
        if spec.streaming is not None else StreamPolicy(),
    )


def _auth(name: str, spec: _AuthSpec) -> HeaderAuth:
    """The checked spec as the flow's auth (`_check_auth` has vouched for every key)."""
    at = f"agents.{name}.auth"
    if spec.type == "oauth2_client_credentials":
        assert spec.token_url is not None
        assert spec.client_id is not None
        assert spec.client_secret is not None
        return OAuth2ClientCredentials(spec.token_url, spec.client_id,
                                       secret_ref(spec.client_secret, f"{at}.client_secret"),
                                       tuple(spec.scopes or ()))
    assert spec.secret is not None
    secret = secret_ref(spec.secret, f"{at}.secret")
    if spec.type == "api_key":
        return ApiKeyAuth(secret, spec.header or "X-API-Key")
    return BearerAuth(secret)


class _CredentialsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auth: _AuthSpec | None = None
    mtls: _MtlsSpec | None = None


def with_agent_credentials(flow: Flow, given: Mapping[str, Any], source: str) -> Flow:
    """The flow with some agents' `auth` / `mtls` replaced (AGENT_AUTH_<NAME>, JSON shaped as
    in the flow file: `{"auth": {...}, "mtls": {...}}`), checked as the flow file's are."""
    return _with_overrides(flow, given, source, _credentials_of)


def with_agent_versions(flow: Flow, given: Mapping[str, Any], source: str) -> Flow:
    """The flow with some agents' versions replaced (AGENT_VERSIONS_<NAME>, a JSON list shaped
    as the flow file's `versions`), checked as the flow file's are: how a deployed stack sets
    and changes weights without a new flow file."""
    return _with_overrides(flow, given, source, _versions_of)


def _with_overrides(flow: Flow, given: Mapping[str, Any], source: str,
                    override: Callable[[Agent, Any, _Problems], Agent]) -> Flow:
    """Each agent named in `given` changed by `override`; every problem reported at once,
    each prefixed with the variable it came from (`<source>_<NAME>`)."""
    problems: list[str] = []
    agents = dict(flow.agents)
    for name, value in given.items():
        where = f"{source}_{name.upper()}"
        if name not in flow.agents:
            problems.append(f"{where}: {name!r} is not an agent of the flow "
                            f"(agents: {', '.join(sorted(flow.agents))})")
            continue
        found = _Problems(where, {})
        changed = override(flow.agents[name], value, found)
        if found.found:
            problems += [f"{where}: {problem}" for _, _, problem in found.found]
        else:
            agents[name] = changed
    if problems:
        raise FlowConfigError("\n".join(problems))
    return replace(flow, agents=agents)


def _credentials_of(agent: Agent, value: Any, problems: _Problems) -> Agent:
    try:
        given = _CredentialsSpec.model_validate(value)
    except ValidationError as exc:
        for error in exc.errors():
            problems.add((), f"{'.'.join(map(str, error['loc'])) or 'the value'}: "
                         f"{_SHAPE_WORDS.get(error['type'], error['msg'])}")
        return agent
    spec = _current_spec(agent).model_copy(update={"auth": given.auth, "mtls": given.mtls})
    _check_auth(agent.name, spec, problems)
    if problems.found:
        return agent
    built = _agent(agent.name, spec)
    return replace(agent, auth=built.auth, mtls=built.mtls)


def _versions_of(agent: Agent, value: Any, problems: _Problems) -> Agent:
    try:
        versions = [_VersionSpec.model_validate(item) for item in value]
    except (ValidationError, TypeError) as exc:
        problems.add((), f"must be a list of {{name, url, weight}}: {type(exc).__name__}")
        return agent
    spec = _AgentSpec(versions=versions,
                      mtls=_MtlsSpec(secret=str(agent.mtls.secret)) if agent.mtls else None)
    _check_where(agent.name, spec, problems)
    _check_auth(agent.name, spec, problems)
    if problems.found:
        return agent
    built = _agent(agent.name, spec)
    return replace(agent, url=built.url, versions=built.versions)


def _current_spec(agent: Agent) -> _AgentSpec:
    """Where an agent of a loaded flow answers, as a spec (to check new credentials against)."""
    if not agent.versions:
        return _AgentSpec(url=agent.url)
    return _AgentSpec(versions=[_VersionSpec(name=v.name, url=v.url, weight=v.weight)
                                for v in agent.versions])


def _line_of(path: Path_, lines: Mapping[Path_, int]) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _load_with_lines(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML into plain data, remembering the line of every node and refusing duplicate keys
    (PyYAML would silently keep the last one, hiding a duplicated intent)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    lines: dict[Path_, int] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            raise FlowConfigError(f"{source}:1: the flow file is empty")

        def build(node: yaml.Node, path: Path_) -> Any:
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
