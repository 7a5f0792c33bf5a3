"""A circuit breaker per agent, its state shared by every instance through the session store.

Closed: calls go through; failures of the agent itself (unreachable, timeout, HTTP error, a
malformed or oversized answer) are counted in a window shared by all instances, with the
successes each instance saw since its last report; at least `failures` of them, making at least
`failure_rate` of the calls, open the breaker (a busy agent failing 5 % stays closed). Open:
steps for that agent fail fast with `agent_unavailable`, no network call, until the cool-down
ends. Half-open: one probe at a time goes through; its success closes
the breaker, its failure opens it again.

Cost on the happy path: an instance keeps what it last saw of each breaker for a second and,
when that has lapsed, looks again *alongside* the claim (one command on another connection, no
sequential round trip). Only failures and probes report to Redis; successes are counted in
process and travel with the next failure report. The state cannot ride inside
the claim and commit scripts: on Redis Cluster (and ElastiCache Serverless) a script may only
touch keys of one slot, and a breaker is shared by calls of every slot.

The breaker keeps its state behind a port of its own (`BreakerStore`), with a Redis adapter
(`redis_store`, Lua scripts) and an embedded one (`memory_store`), each on the same connection
or keyspace kind as the session store but not through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol

from orchestrator_flows.errors import AgentUnavailable, FailureCode, StoreUnavailable

BreakerState = Literal["closed", "open", "half_open"]
Decision = Literal["closed", "probe", "open"]

SEEN_FOR_SECONDS = 1.0
KEY_PREFIX = "of:breaker"


def breaker_key(agent: str) -> str:
    """One agent's circuit breaker, shared by every call (its own hash tag)."""
    return f"{KEY_PREFIX}:{{{agent}}}"


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 5  # at least this many within the window, to open; 0 turns the breaker off
    failure_rate: float = 0.5  # and at least this share of the calls in the window
    window_seconds: float = 30.0
    cooldown_seconds: float = 15.0

    @property
    def enabled(self) -> bool:
        return self.failures > 0


class BreakerStore(Protocol):
    """The breaker's port: three atomic primitives over one agent's breaker record, each one
    round trip (a Lua script on Redis); a store that cannot answer raises StoreUnavailable."""

    async def peek(self, agent: str, cooldown_ms: int) -> BreakerState: ...

    async def admit(self, agent: str, cooldown_ms: int, probe_ms: int) -> tuple[Decision, int]:
        """closed: go; probe: go, as the one probe; open: do not (with ms until a retry)."""
        ...

    async def report(
        self, agent: str, ok: bool, policy: BreakerPolicy, successes: int
    ) -> BreakerState:
        """`successes`: calls that went well since this instance last reported."""
        ...


class Breakers:
    def __init__(self, *, store: BreakerStore, probe_seconds: float) -> None:
        """`probe_seconds`: how long a half-open breaker waits for its probe before letting
        another through (the agent deadline and a margin)."""
        self.store = store
        self.probe_ms = int(probe_seconds * 1000)
        self._seen: dict[str, tuple[BreakerState, float]] = {}
        self._successes: dict[str, int] = {}

    def _fresh(self, agent: str) -> BreakerState | None:
        seen = self._seen.get(agent)
        return seen[0] if seen is not None and seen[1] > time.monotonic() else None

    def _remember(self, agent: str, state: BreakerState) -> None:
        self._seen[agent] = (state, time.monotonic() + SEEN_FOR_SECONDS)

    def stale(self, agent: str, policy: BreakerPolicy) -> bool:
        """Whether `refresh` has anything to do: what this instance saw has lapsed."""
        return policy.enabled and self._fresh(agent) is None

    async def refresh(self, agent: str, policy: BreakerPolicy) -> None:
        """Look at the shared state when what this instance saw has lapsed; run it alongside
        the claim. A store that cannot answer leaves the breaker closed: the claim says why."""
        if not self.stale(agent, policy):
            return
        try:
            state = await self.store.peek(agent, int(policy.cooldown_seconds * 1000))
        except StoreUnavailable:
            return
        self._remember(agent, state)

    async def admit(self, agent: str, policy: BreakerPolicy) -> Decision:
        """Whether this step may call the agent; raises AgentUnavailable when it may not."""
        if not policy.enabled or (self._fresh(agent) or "closed") == "closed":
            return "closed"
        try:
            decision, retry_ms = await self.store.admit(
                agent, int(policy.cooldown_seconds * 1000), self.probe_ms)
        except StoreUnavailable:
            return "closed"
        if decision == "open":
            self._remember(agent, "open")
            raise AgentUnavailable(agent, retry_ms)
        return decision

    async def report(self, agent: str, policy: BreakerPolicy, decision: Decision,
                     failure: FailureCode | None) -> None:
        counted = failure is not None and failure.trips_breaker
        if not policy.enabled:
            return
        if not counted and decision != "probe":
            # A success while closed is counted here and told with the next failure: no I/O.
            self._successes[agent] = self._successes.get(agent, 0) + 1
            return
        successes = self._successes.pop(agent, 0)
        try:
            state = await self.store.report(agent, not counted, policy, successes)
        except StoreUnavailable:
            return
        self._remember(agent, state)
