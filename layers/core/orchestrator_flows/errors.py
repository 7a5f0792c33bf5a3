"""The domain's exception tree; `api.py` maps it to HTTP status codes and error codes, once.
(Malformed and oversized requests never reach the domain: `api.py` answers them itself, 422
invalid_request and 413 payload_too_large.)

OrchestratorError
├── RequestRefused            the caller's turn is refused; nothing was recorded
│   ├── IntentNotAllowed          409 intent_not_allowed
│   ├── SessionComplete           409 session_complete
│   ├── SessionEscalated          409 session_escalated (the call was handed to a person)
│   ├── SessionEnded              409 session_ended (the call was deleted)
│   ├── StepInProgress            409 step_in_progress (+ Retry-After)
│   ├── StepLimitReached          409 step_limit_reached (with max_steps)
│   ├── IdempotencyKeyReused      422 idempotency_key_reused
│   ├── AccountMismatch           403 account_mismatch
│   ├── SessionNotFound           404 session_not_found
│   ├── InvalidCursor             422 invalid_cursor (a page cursor this API did not give)
│   ├── TrailConflict             409 archive_conflict (DELETE: the archive holds another trail)
│   └── ArchiveOff                501 archive_off (the account routes need ARCHIVE_TABLE)
├── StoreUnavailable          503 store_unavailable
├── ArchiveUnavailable        503 archive_unavailable (DELETE archives a call before its keys go)
├── ClaimLost                 the turn answers 200, status error, code claim_lost; nothing written
├── UnstorableStep            a step that could not be read back as JSON; recorded as a bad answer
├── AgentFailure              an agent call without a usable answer (a FailureCode); recorded as
│   │                         the step's error, the turn answers 200 with status error
│   └── AgentUnavailable          its circuit is open: not called (agent_unavailable)
├── FlowConfigError           a flow file that must not start the service
└── SettingsError             an environment that cannot configure the service (names the variable)

`FailureCode` names every way an agent call can fail, and carries what each one means for the
rest of the turn: whether it is tried again, whether it counts against the agent's circuit
breaker, whether the agent's open task survives it. Those decisions are made here, once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator_flows.records import Attempt


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""


class RequestRefused(OrchestratorError):
    """A turn or request refused before anything was written."""

    code = "refused"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class IntentNotAllowed(RequestRefused):
    code = "intent_not_allowed"


class SessionComplete(RequestRefused):
    code = "session_complete"


class SessionEscalated(RequestRefused):
    """The call was handed to a person: it takes no more turns (with the handoff's `queue` and
    `reason`)."""

    code = "session_escalated"


class SessionEnded(RequestRefused):
    """The call was ended with DELETE: a late turn, or a retry of an old one, cannot start it
    again."""

    code = "session_ended"


class StepInProgress(RequestRefused):
    code = "step_in_progress"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class StepLimitReached(RequestRefused):
    """The call has as many steps as a call may have."""

    code = "step_limit_reached"


class IdempotencyKeyReused(RequestRefused):
    """An Idempotency-Key already answered a different turn of the call."""

    code = "idempotency_key_reused"


class AccountMismatch(RequestRefused):
    code = "account_mismatch"


class SessionNotFound(RequestRefused):
    code = "session_not_found"


class InvalidCursor(RequestRefused):
    """A page cursor that this API did not give."""

    code = "invalid_cursor"


class TrailConflict(RequestRefused):
    """DELETE of a call whose id the archive holds with another trail: it cannot be archived,
    so it is not ended (the sweeper's failures and alarm say the same)."""

    code = "archive_conflict"


class ArchiveOff(RequestRefused):
    """A route that reads or erases the archive, in a process that has none."""

    code = "archive_off"


class StoreUnavailable(OrchestratorError):
    """The session store could not be reached or did not answer in time."""

    code = "store_unavailable"


class ArchiveUnavailable(OrchestratorError):
    """The archive could not be written or read (DynamoDB down, throttled, denied)."""

    code = "archive_unavailable"


class FlowConfigError(OrchestratorError):
    """A flow file is invalid; the message names the file, the line and the problem."""


class ClaimLost(OrchestratorError):
    """The per-call claim expired before the commit; the turn's writes were refused."""

    code = "claim_lost"


class UnstorableStep(OrchestratorError):
    """A step or answer holds what JSON cannot carry and read back (NaN, a lone surrogate);
    raised before anything is sent to the store."""


class SettingsError(OrchestratorError, ValueError):
    """The environment cannot configure the orchestrator; the message names the variable."""


# An HTTP error from these is a gateway in front of the agent, not the agent's answer.
GATEWAY_STATUSES = frozenset({502, 503, 504})


class FailureCode(StrEnum):
    """Every way an agent call can fail; the value is the `code` callers see."""

    UNREACHABLE = "agent_unreachable"  # no connection, or it broke before an answer
    TIMEOUT = "agent_timeout"  # no answer within the step's deadline
    HTTP_ERROR = "agent_http_error"  # an HTTP status of 400 or more
    BAD_RESPONSE = "agent_bad_response"  # not a JSON-RPC/A2A answer, or one that cannot be kept
    RESPONSE_TOO_LARGE = "agent_response_too_large"  # over the client's body limit
    RPC_ERROR = "agent_rpc_error"  # a JSON-RPC error object
    TASK_FAILED = "agent_task_failed"
    TASK_REJECTED = "agent_task_rejected"
    TASK_CANCELED = "agent_task_canceled"
    TASK_UNFINISHED = "agent_task_unfinished"  # neither finished nor waiting for the caller
    UNAVAILABLE = "agent_unavailable"  # its circuit is open: not called
    # Its credentials could not be had, or it refused them (401/403, after one fresh try).
    AUTH_FAILED = "agent_auth_failed"
    # A streamed answer that ended, stalled or broke before the task finished or waited: the
    # agent had the message and began, so it is not sent again; what arrived is recorded.
    STREAM_BROKEN = "agent_stream_broken"
    # Called with others at once (`succeed_when: first`): another completed first, and this
    # one's answer was no longer awaited (its call was cancelled).
    NOT_AWAITED = "agent_not_awaited"

    def retried(self, http_status: int | None = None) -> bool:
        """Worth another try within the step's deadline: the agent could not be reached or
        timed out, or a gateway in front of it answered 502/503/504."""
        if self is FailureCode.HTTP_ERROR:
            return http_status in GATEWAY_STATUSES
        return self in _RETRIED

    @property
    def trips_breaker(self) -> bool:
        """Says the agent is unwell (counted by its circuit breaker); a task the agent itself
        failed or rejected, or a JSON-RPC error it chose, is an answer."""
        return self in _TRIPS_BREAKER

    @property
    def keeps_task(self) -> bool:
        """The agent's open task may still be alive after it, and is continued next turn."""
        return self in _KEEPS_TASK


_RETRIED = frozenset({FailureCode.UNREACHABLE, FailureCode.TIMEOUT})
_TRIPS_BREAKER = frozenset({FailureCode.UNREACHABLE, FailureCode.TIMEOUT, FailureCode.HTTP_ERROR,
                            FailureCode.BAD_RESPONSE, FailureCode.RESPONSE_TOO_LARGE,
                            FailureCode.STREAM_BROKEN})
# Refused credentials never reached the task: it is still open. A broken stream left it alive.
_KEEPS_TASK = frozenset({FailureCode.UNREACHABLE, FailureCode.TIMEOUT, FailureCode.UNAVAILABLE,
                         FailureCode.AUTH_FAILED, FailureCode.STREAM_BROKEN})


class AgentFailure(OrchestratorError):
    """An agent call that produced no usable answer; `code` says which way it failed, `detail`
    what the caller may see of it (http_status, rpc_code, task_id, task_state)."""

    def __init__(self, code: FailureCode, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.attempts: tuple[Attempt, ...] = ()  # each try, in order (set by the client)
        # What the agent had said when its streamed answer broke: text and data (unmasked,
        # like an answer; the engine masks it with the step).
        self.arrived: tuple[str, dict[str, Any]] = ("", {})

    @property
    def retried(self) -> bool:
        return self.code.retried(self.detail.get("http_status"))

    @property
    def outcome(self) -> str:
        """How one try ended, for the step's `attempts`: the code, or `http_<status>`."""
        if self.code is FailureCode.HTTP_ERROR:
            return f"http_{self.detail.get('http_status')}"
        return self.code.value

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, **self.detail}


class AgentUnavailable(AgentFailure):
    """The agent's circuit is open: the step fails fast, the agent is not called."""

    def __init__(self, agent: str, retry_after_ms: int) -> None:
        super().__init__(FailureCode.UNAVAILABLE,
                         f"agent {agent} is unavailable (circuit open); not called",
                         retry_after_ms=retry_after_ms)
