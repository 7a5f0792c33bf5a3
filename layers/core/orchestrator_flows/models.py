"""The HTTP API's models (DESIGN §2): requests are validated with them, responses documented."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MAX_BODY_BYTES = 64 * 1024


class TurnRequest(BaseModel):
    """One turn of a call, as the contact-center platform sends it."""

    # Extra fields are ignored so a platform that adds metadata is not refused.
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "call_identify_id": "CALL-001",
                    "account_id": "ACC-999",
                    "eci": "ECI-7",
                    "input_message": "Hello",
                    "intent": "greeting",
                }
            ]
        },
    )

    call_identify_id: Identifier
    account_id: Identifier
    eci: Identifier
    input_message: Annotated[str, StringConstraints(max_length=32_000)]
    intent: Identifier


class AgentResponse(BaseModel):
    agent: str
    text: str
    data: dict[str, Any]
    state: str | None = Field(description="the agent's task state: completed, input-required …")
    task_id: str | None
    context_id: str | None
    error: dict[str, Any] | None = Field(description="{code, message, …} when status is error")
    latency_ms: float


class Step(BaseModel):
    step_number: int
    intent_flow_id: int
    intent: str
    input_message: str
    agent: str
    a2a_agent_url: str
    a2a_version: str | None
    response_status: Literal["success", "input_required", "error"]
    response_data: AgentResponse
    timestamp: str


class SessionState(BaseModel):
    call_identify_id: str
    account_id: str
    eci: str
    current_flow_id: int
    completed_flows: list[int]
    is_complete: bool
    steps: list[Step]
    created_at: str
    updated_at: str


class TurnResponse(BaseModel):
    call_identify_id: str
    intent_flow_id: int
    intent: str
    status: Literal["success", "input_required", "error"]
    response: AgentResponse
    next_flow_id: int | None
    is_complete: bool
    session_summary: SessionState | None


class StepsResponse(BaseModel):
    call_identify_id: str
    steps: list[Step]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="machine-readable error code")
    message: str = Field(description="for a person")


class ErrorResponse(BaseModel):
    error: ErrorDetail
