"""The breakers' state in process, for local runs without Redis: what the Lua scripts of
`redis_store` do, over an embedded keyspace."""

from __future__ import annotations

from typing import cast

from orchestrator_flows.breaker import BreakerPolicy, BreakerState, Decision, breaker_key
from orchestrator_flows.kv.memory import Keyspace


class MemoryBreakerStore:
    def __init__(self, keyspace: Keyspace | None = None) -> None:
        self.keyspace = keyspace or Keyspace()

    def _record(self, agent: str) -> tuple[str, dict[str, str], int]:
        key = breaker_key(agent)
        return key, self.keyspace.hash_of(key), int(self.keyspace.now() * 1000)

    def _save(self, key: str, record: dict[str, str], ttl_ms: int) -> None:
        self.keyspace.put(key, record, ttl_ms / 1000)

    async def peek(self, agent: str, cooldown_ms: int) -> BreakerState:
        _, record, now = self._record(agent)
        state = record.get("state", "closed")
        if state == "open" and now >= int(record["opened_at"]) + cooldown_ms:
            return "half_open"
        return cast(BreakerState, state)  # the record only ever holds the three states

    async def admit(self, agent: str, cooldown_ms: int, probe_ms: int) -> tuple[Decision, int]:
        key, record, now = self._record(agent)
        state = record.get("state", "closed")
        if state == "closed":
            return "closed", 0
        until = (int(record["opened_at"]) + cooldown_ms if state == "open"
                 else int(record["probe_until"]))
        if now < until:
            return "open", until - now
        record.update(state="half_open", probe_until=str(now + probe_ms))
        self._save(key, record, cooldown_ms + probe_ms + 60_000)
        return "probe", 0

    async def report(
        self, agent: str, ok: bool, policy: BreakerPolicy, successes: int
    ) -> BreakerState:
        key, record, now = self._record(agent)
        window_ms = int(policy.window_seconds * 1000)
        cooldown_ms = int(policy.cooldown_seconds * 1000)
        state = record.get("state", "closed")
        if ok:
            self.keyspace.delete(key)
            return "closed"
        ttl = window_ms + cooldown_ms + 60_000
        if state != "closed":
            record.update(state="open", opened_at=str(now))
            self._save(key, record, ttl)
            return "open"
        start, failures = int(record.get("window_start", 0)), int(record.get("failures", 0))
        seen_ok = int(record.get("successes", 0))
        if now - start > window_ms:
            start, failures, seen_ok = now, 0, 0
        failures += 1
        seen_ok += successes
        if failures >= policy.failures and failures / (failures + seen_ok) >= policy.failure_rate:
            record.update(state="open", opened_at=str(now), failures="0", successes="0")
            self._save(key, record, ttl)
            return "open"
        record.update(window_start=str(start), failures=str(failures), successes=str(seen_ok))
        self._save(key, record, ttl)
        return "closed"
