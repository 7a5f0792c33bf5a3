"""The domain's exception tree; `api.py` maps it to HTTP status codes and error codes, once.
(Malformed and oversized requests never reach the domain: `api.py` answers them itself, 422
invalid_request and 413 payload_too_large.)

OrchestratorError
├── RequestRefused            the caller's turn is refused; nothing was recorded
│   ├── IntentNotAllowed          409 intent_not_allowed
│   ├── SessionComplete           409 session_complete
│   ├── SessionEnded              409 session_ended (the call was deleted)
│   ├── StepInProgress            409 step_in_progress (+ Retry-After)
│   ├── StepLimitReached          409 step_limit_reached (with max_steps)
│   ├── IdempotencyKeyReused      422 idempotency_key_reused
│   ├── AccountMismatch           403 account_mismatch
│   └── SessionNotFound           404 session_not_found
├── StoreUnavailable          503 store_unavailable
├── ClaimLost                 the turn answers 200, status error, code claim_lost; nothing written
├── UnstorableStep            a step that could not be read back as JSON; recorded as a bad answer
└── FlowConfigError           a flow file that must not start the service
"""

from __future__ import annotations

from typing import Any


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


class StoreUnavailable(OrchestratorError):
    """The session store could not be reached or did not answer in time."""

    code = "store_unavailable"


class FlowConfigError(OrchestratorError):
    """A flow file is invalid; the message names the file, the line and the problem."""


class ClaimLost(OrchestratorError):
    """The per-call claim expired before the commit; the turn's writes were refused."""

    code = "claim_lost"


class UnstorableStep(OrchestratorError):
    """A step or answer holds what JSON cannot carry and read back (NaN, a lone surrogate);
    raised before anything is sent to the store."""
