"""The embedded backend for local runs without Redis: the same five primitives, in process.

Each primitive runs without awaiting, so on one event loop it is as atomic as a Lua script.
Expiry follows Redis: a key past its deadline is gone when next touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

from orchestrator_flows.breaker import BreakerPolicy, BreakerState, Decision
from orchestrator_flows.store import (
    Busy,
    CallKeys,
    ClaimResult,
    Ended,
    Recorded,
    Taken,
    breaker_key,
)


@dataclass
class _Entry:
    value: str | dict[str, str] | list[str]
    expires_at: float | None = None


@dataclass
class MemoryBackend:
    name: str = "embedded"
    _data: dict[str, _Entry] = field(default_factory=dict)

    def _now(self) -> float:
        return time.monotonic()

    def _get(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._now():
            del self._data[key]
            return None
        return entry

    def _hash(self, key: str) -> dict[str, str]:
        entry = self._get(key)
        return dict(entry.value) if entry is not None and isinstance(entry.value, dict) else {}

    def _list(self, key: str) -> list[str]:
        entry = self._get(key)
        return list(entry.value) if entry is not None and isinstance(entry.value, list) else []

    def pttl_ms(self, key: str) -> int:
        """-2 when missing, -1 without expiry, like Redis PTTL."""
        entry = self._get(key)
        if entry is None:
            return -2
        if entry.expires_at is None:
            return -1
        return max(0, int((entry.expires_at - self._now()) * 1000))

    async def claim(
        self, keys: CallKeys, token: str, lease_ms: int, reply_key: str | None
    ) -> ClaimResult:
        if self._get(keys.ended) is not None:
            return Ended()
        reply = self._hash(keys.replies).get(reply_key) if reply_key else None
        if reply is not None:
            steps = tuple(self._list(keys.steps)) if reply.startswith("1") else ()
            return Recorded(reply, self._hash(keys.state), steps)
        holder = self._get(keys.claim)
        if holder is not None and holder.value != token:
            return Busy(self.pttl_ms(keys.claim))
        self._data[keys.claim] = _Entry(token, self._now() + lease_ms / 1000)
        return Taken(self._hash(keys.state))

    async def commit(
        self,
        keys: CallKeys,
        token: str,
        ttl_seconds: int,
        step: str,
        state: dict[str, str],
        return_steps: bool,
        reply: tuple[str, str] | None,
    ) -> list[str] | None:
        if self._hash(keys.state).get("last_commit") == token:  # sent again: it already ran
            return self._list(keys.steps) if return_steps else []
        holder = self._get(keys.claim)
        if holder is None or holder.value != token:
            return None
        expires_at = self._now() + ttl_seconds
        steps = self._get(keys.steps)
        if steps is not None and isinstance(steps.value, list):
            steps.value.append(step)
            steps.expires_at = expires_at
        else:
            self._data[keys.steps] = _Entry([step], expires_at)
        self._data[keys.state] = _Entry(
            {**self._hash(keys.state), **state, "last_commit": token}, expires_at)
        replies = self._hash(keys.replies)
        if reply is not None:
            replies[reply[0]] = reply[1]
        if replies:
            self._data[keys.replies] = _Entry(replies, expires_at)
        del self._data[keys.claim]
        return self._list(keys.steps) if return_steps else []

    async def release(self, keys: CallKeys, token: str) -> None:
        holder = self._get(keys.claim)
        if holder is not None and holder.value == token:
            del self._data[keys.claim]

    async def read(self, keys: CallKeys, with_steps: bool) -> tuple[dict[str, str], list[str]]:
        state = self._hash(keys.state)
        return state, self._list(keys.steps) if with_steps and state else []

    async def delete(self, keys: CallKeys, ended_seconds: int) -> bool:
        existed = self._get(keys.state) is not None
        for key in (keys.state, keys.steps, keys.claim, keys.replies):
            self._data.pop(key, None)
        if existed:
            self._data[keys.ended] = _Entry("1", self._now() + ended_seconds)
        return existed

    # The breaker primitives, as the Lua scripts in redis_backend do them.

    def _breaker(self, agent: str) -> tuple[str, dict[str, str], int]:
        key = breaker_key(agent)
        return key, self._hash(key), int(self._now() * 1000)

    def _save_breaker(self, key: str, record: dict[str, str], ttl_ms: int) -> None:
        self._data[key] = _Entry(record, self._now() + ttl_ms / 1000)

    async def breaker_peek(self, agent: str, cooldown_ms: int) -> BreakerState:
        _, record, now = self._breaker(agent)
        state = record.get("state", "closed")
        if state == "open" and now >= int(record["opened_at"]) + cooldown_ms:
            return "half_open"
        return cast(BreakerState, state)  # the record only ever holds the three states

    async def breaker_admit(
        self, agent: str, cooldown_ms: int, probe_ms: int
    ) -> tuple[Decision, int]:
        key, record, now = self._breaker(agent)
        state = record.get("state", "closed")
        if state == "closed":
            return "closed", 0
        until = (int(record["opened_at"]) + cooldown_ms if state == "open"
                 else int(record["probe_until"]))
        if now < until:
            return "open", until - now
        record.update(state="half_open", probe_until=str(now + probe_ms))
        self._save_breaker(key, record, cooldown_ms + probe_ms + 60_000)
        return "probe", 0

    async def breaker_report(
        self, agent: str, ok: bool, policy: BreakerPolicy, successes: int
    ) -> BreakerState:
        key, record, now = self._breaker(agent)
        window_ms = int(policy.window_seconds * 1000)
        cooldown_ms = int(policy.cooldown_seconds * 1000)
        state = record.get("state", "closed")
        if ok:
            self._data.pop(key, None)
            return "closed"
        ttl = window_ms + cooldown_ms + 60_000
        if state != "closed":
            record.update(state="open", opened_at=str(now))
            self._save_breaker(key, record, ttl)
            return "open"
        start, failures = int(record.get("window_start", 0)), int(record.get("failures", 0))
        seen_ok = int(record.get("successes", 0))
        if now - start > window_ms:
            start, failures, seen_ok = now, 0, 0
        failures += 1
        seen_ok += successes
        if failures >= policy.failures and failures / (failures + seen_ok) >= policy.failure_rate:
            record.update(state="open", opened_at=str(now), failures="0", successes="0")
            self._save_breaker(key, record, ttl)
            return "open"
        record.update(window_start=str(start), failures=str(failures), successes=str(seen_ok))
        self._save_breaker(key, record, ttl)
        return "closed"

    async def close(self) -> None:
        self._data.clear()

    def keys_of(self, call_identify_id: str) -> list[str]:
        """Live keys of one call (what a SCAN over Redis would find), for tests."""
        tag = CallKeys.of(call_identify_id).state.rsplit(":", 1)[0]
        return [k for k in list(self._data) if k.startswith(tag) and self._get(k) is not None]
