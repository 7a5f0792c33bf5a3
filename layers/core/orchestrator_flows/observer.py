"""The observer port: what the engine and the API tell observability, so the core stays free of
any one vendor. Lambda plugs in Powertools (`lambda_telemetry.py`); local runs keep the silent
default."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Protocol

logger = logging.getLogger(__name__)


class Observer(Protocol):
    def span(self, name: str, **annotations: str) -> AbstractAsyncContextManager[None]:
        """A traced section of a turn (the Redis claim and commit, the agent call)."""
        ...

    def turn_routed(self, call_identify_id: str, intent: str, stage_id: int, agent: str) -> None:
        ...

    def agent_answered(self, agent: str, latency_ms: float, error_code: str | None,
                       version: str | None = None) -> None: ...

    def turn_done(
        self, status: str, advanced: bool, completed: bool, latency_ms: float,
        input_length: int, reply_length: int,
    ) -> None: ...

    def turn_refused(self, code: str) -> None: ...

    def agent_auth_unmet(self, agent: str, alternatives: list[dict[str, str]]) -> None:
        """The agent's card asks for credentials the flow file does not configure."""
        ...


class _Nothing:
    """A span that records nothing: one shared object, no generator per span."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *_: object) -> None:
        return None


NO_SPAN = _Nothing()


class SilentObserver:
    def span(self, name: str, **annotations: str) -> AbstractAsyncContextManager[None]:
        return NO_SPAN

    def turn_routed(self, call_identify_id: str, intent: str, stage_id: int, agent: str) -> None:
        return None

    def agent_answered(self, agent: str, latency_ms: float, error_code: str | None,
                       version: str | None = None) -> None:
        return None

    def turn_done(
        self, status: str, advanced: bool, completed: bool, latency_ms: float,
        input_length: int, reply_length: int,
    ) -> None:
        return None

    def turn_refused(self, code: str) -> None:
        return None

    def agent_auth_unmet(self, agent: str, alternatives: list[dict[str, str]]) -> None:
        # No metrics here, but a misconfiguration is still worth a line in the log.
        logger.warning("%s", unmet_auth_message(agent, alternatives))


def unmet_auth_message(agent: str, alternatives: list[dict[str, str]]) -> str:
    asked = " or ".join(" + ".join(f"{name} ({kind})" for name, kind in alternative.items())
                        for alternative in alternatives)
    return (f"agent {agent}'s card asks for {asked}; the flow file configures no credentials "
            "that meet it (the agent may refuse the orchestrator's calls)")
