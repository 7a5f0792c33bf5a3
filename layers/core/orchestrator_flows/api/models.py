"""The HTTP API's own models (DESIGN §2): the turn request and the error body. What the API
answers on success are the records themselves (`orchestrator_flows.records`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MAX_BODY_BYTES = 64 * 1024
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$"


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
    intent: Annotated[Identifier | None, Field(
        description="the caller's intent; absent (or null): read from input_message among the "
        "stage's intents")] = None
    locale: Annotated[str | None, Field(
        pattern=LOCALE_PATTERN, description="of input_message (en, es, es-MX …); absent: the "
        "flow's")] = None


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="machine-readable error code")
    message: str = Field(description="for a person")


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}
