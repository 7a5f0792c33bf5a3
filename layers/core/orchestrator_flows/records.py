"""What a turn leaves behind and answers, as typed records (DESIGN §2): an agent's part of a
step, the step in the audit trail, the turn's answer, a call's public state.

Each is a frozen dataclass, built in one place (the engine builds steps and answers,
`session_state` a call's state), and is at once the HTTP API's response model: `dump_json`
serialises a record by its own pydantic schema and `json_schemas` is what the OpenAPI
documents, so the two cannot drift. The same encoding is what the store keeps. Schemas are
built on first use, never at a function's cold start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter
from pydantic_core import PydanticSerializationError

from orchestrator_flows.errors import UnstorableStep
from orchestrator_flows.session import Handoff, Session

# A turn's outcome: the agent's (success, input_required, error); escalated: the call is
# handed to a person (`handoff`), with or without an agent call on the way; clarify: the
# caller's words could not be read as an intent (no agent called, the call stays).
Status = Literal["success", "input_required", "error", "escalated", "clarify"]
# How a turn's intent was found: the request said it; a short follow-up continued its stage's
# open task; the offline classifier, or the flow's classifier agent, read it from the words.
IntentSource = Literal["caller", "continuation", "classifier", "agent"]
PARTS = ("for an intent served by several agents at once: each agent's own answer, in the "
         "flow's order (`response` is their combination)")
INTENT_SOURCE = ("caller: the request named it; continuation: a short follow-up without one "
                 "continued its stage's open task; classifier: read from the caller's words "
                 "offline; agent: read by the flow's classifier agent")
# An archived call: archived once idle (active), complete, escalated, or ended (DELETE).
CallStatus = Literal["active", "complete", "escalated", "ended"]
HANDOFF = ("set once the call is handed to a person: transfer it to `queue`; the call takes no "
           "more turns")


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One try of an agent call within a step."""

    outcome: Annotated[str, Field(
        description="ok, an error code (agent_timeout …) or http_<status>")]
    latency_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResponse:
    """The agent's part of a step: what it answered (masked), or how it failed."""

    agent: str
    text: str
    data: dict[str, Any]
    state: Annotated[str | None, Field(
        description="the agent's task state: completed, input-required …")]
    task_id: str | None
    context_id: str | None
    error: Annotated[dict[str, Any] | None, Field(
        description="{code, message} when status is error, with http_status, rpc_code, "
        "task_id, task_state or retry_after_ms where they apply")]
    latency_ms: float
    attempts: Annotated[tuple[Attempt, ...], Field(
        description="each try of the agent call, in order")] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """An intent the classifier weighed, and how like it the caller's words were (0–1)."""

    intent: str
    score: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One turn in the call's audit trail."""

    step_number: int
    intent_flow_id: int
    intent: Annotated[str | None, Field(description="null when the caller's words could not "
                                                      "be read as an intent (clarify)")]
    input_message: str
    agent: Annotated[str | None, Field(description="null when no agent was called (the "
                                                     "caller asked for a person)")]
    a2a_agent_url: str | None
    a2a_version: str | None
    response_status: Status
    response_data: AgentResponse | None
    timestamp: str
    agent_version: Annotated[str | None, Field(
        description="the agent's version that served the step, for an agent with versions")
    ] = None
    handoff: Annotated[Handoff | None, Field(description="why and where the step handed the "
                                                         "call to a person")] = None
    intent_source: Annotated[IntentSource | None, Field(description=INTENT_SOURCE)] = None
    confidence: Annotated[float | None, Field(
        description="the classifier's score of its reading (0–1), when it read one")] = None
    parts: Annotated[tuple[AgentResponse, ...], Field(description=PARTS)] = ()


Source = Literal["live", "archive"]
SOURCE = ("live: the call as Redis holds it; archive: from the archive, once Redis no longer "
          "holds the call")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionState:
    """A call's public state and its audit trail, oldest step first."""

    call_identify_id: str
    account_id: str
    eci: str
    current_flow_id: int
    completed_flows: tuple[int, ...]
    is_complete: bool
    steps: tuple[Step, ...]
    created_at: str
    updated_at: str
    source: Annotated[Source, Field(description=SOURCE)] = "live"
    handoff: Annotated[Handoff | None, Field(description=HANDOFF)] = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnResponse:
    """The answer to one turn: where the call goes next."""

    call_identify_id: str
    intent_flow_id: int
    intent: Annotated[str | None, Field(description="as named, continued or read; null when "
                                                      "the words could not be read (clarify)")]
    status: Status
    response: Annotated[AgentResponse | None, Field(
        description="the agent's answer; null when no agent was called")]
    next_flow_id: Annotated[int | None, Field(
        description="null once the call is complete or escalated")]
    is_complete: bool
    session_summary: Annotated[SessionState | None, Field(
        description="the whole call, on the turn that completed or escalated it")] = None
    handoff: Annotated[Handoff | None, Field(description=HANDOFF)] = None
    intent_source: Annotated[IntentSource | None, Field(description=INTENT_SOURCE)] = None
    confidence: Annotated[float | None, Field(
        description="the classifier's score of its reading (0–1), when it read one")] = None
    candidates: Annotated[tuple[Candidate, ...], Field(
        description="on clarify: the stage's intents the words were weighed against, best "
        "first")] = ()
    parts: Annotated[tuple[AgentResponse, ...], Field(description=PARTS)] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StepsResponse:
    call_identify_id: str
    steps: tuple[Step, ...] = field(default_factory=tuple)
    source: Annotated[Source, Field(description=SOURCE)] = "live"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSummary:
    """An archived call, as an account's list shows it (its steps are at /session/{id})."""

    call_identify_id: str
    eci: str
    status: Annotated[CallStatus, Field(
        description="as archived: active (archived once idle), complete, escalated, or ended "
        "(DELETE)")]
    current_flow_id: int
    step_count: int
    created_at: str
    updated_at: str
    archived_at: Annotated[str, Field(description="when the archive last wrote the call")]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallsPage:
    """One page of an account's archived calls, newest first."""

    account_id: str
    calls: tuple[CallSummary, ...]
    next_cursor: Annotated[str | None, Field(
        description="pass as ?cursor= for the next page; null on the last")]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureReceipt:
    """What an erasure of an account's data has done so far."""

    erasure_id: str
    account_id: str
    status: Annotated[Literal["in_progress", "complete"], Field(
        description="in_progress: repeat the request to go on (same erasure_id)")]
    calls_erased: Annotated[int, Field(
        description="calls whose records were replaced by a tombstone")]
    live_calls_erased: Annotated[int, Field(description="of which, calls still in Redis")]
    steps_erased: int
    started_at: str
    finished_at: str | None


Record = (AgentResponse | Step | SessionState | TurnResponse | StepsResponse | CallsPage
          | ErasureReceipt)


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(kind: type[Any]) -> TypeAdapter[Any]:
    """Built on first use: a function serves only some of the records, and each adapter costs
    milliseconds of cold start."""
    adapter = _ADAPTERS.get(kind.__name__)
    if adapter is None:
        adapter = _ADAPTERS[kind.__name__] = TypeAdapter(kind)
    return adapter


def dump_json(record: Record) -> bytes:
    """A record as JSON (UTF-8), by its own schema. What JSON cannot carry and read back (a
    lone surrogate) raises UnstorableStep; a non-finite number becomes null."""
    try:
        return _adapter(type(record)).dump_json(record)
    except PydanticSerializationError as exc:
        raise UnstorableStep(str(exc)) from None


def to_json(record: Record) -> Any:
    """A record as plain JSON data (dicts and lists)."""
    return _adapter(type(record)).dump_python(record, mode="json")


def load_step(text: str | bytes) -> Step:
    step: Step = _adapter(Step).validate_json(text)
    return step


def load_answer(text: str | bytes) -> TurnResponse:
    answer: TurnResponse = _adapter(TurnResponse).validate_json(text)
    return answer


def session_state(session: Session, steps: tuple[Step, ...]) -> SessionState:
    return SessionState(
        call_identify_id=session.call_identify_id,
        account_id=session.account_id,
        eci=session.eci,
        current_flow_id=session.current_flow_id,
        completed_flows=tuple(session.completed_flows),
        is_complete=session.is_complete,
        steps=steps,
        created_at=session.created_at,
        updated_at=session.updated_at,
        handoff=session.handoff,
    )


def load_steps(stored: list[str] | tuple[str, ...]) -> tuple[Step, ...]:
    adapter = _adapter(Step)
    return tuple(adapter.validate_json(text) for text in stored)


RESPONSES = (TurnResponse, SessionState, StepsResponse, CallsPage, ErasureReceipt)


def json_schemas() -> dict[str, Any]:
    """The JSON schema of every record the API answers with, by name, for the OpenAPI's
    components (references between them as `#/components/schemas/<name>`)."""
    schemas: dict[str, Any] = {}
    for kind in RESPONSES:
        schema = _adapter(kind).json_schema(mode="serialization",
                                            ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[kind.__name__] = schema
    return schemas
