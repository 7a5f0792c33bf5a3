"""An embedded keyspace with Redis's expiry rules, for local runs without Redis: a key past its
deadline is gone when next touched. Nothing here awaits, so on one event loop each caller's
primitive is as atomic as a Lua script."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class _Entry:
    value: str | dict[str, str] | list[str]
    expires_at: float | None = None


@dataclass
class Keyspace:
    _data: dict[str, _Entry] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic()

    def _entry(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self.now():
            del self._data[key]
            return None
        return entry

    def exists(self, key: str) -> bool:
        return self._entry(key) is not None

    def get(self, key: str) -> str | None:
        entry = self._entry(key)
        return entry.value if entry is not None and isinstance(entry.value, str) else None

    def hash_of(self, key: str) -> dict[str, str]:
        """A copy of the hash at `key` ({} when missing)."""
        entry = self._entry(key)
        return dict(entry.value) if entry is not None and isinstance(entry.value, dict) else {}

    def list_of(self, key: str) -> list[str]:
        """A copy of the list at `key` ([] when missing)."""
        entry = self._entry(key)
        return list(entry.value) if entry is not None and isinstance(entry.value, list) else []

    def put(self, key: str, value: str | dict[str, str] | list[str],
            ttl_seconds: float | None = None) -> None:
        expires_at = None if ttl_seconds is None else self.now() + ttl_seconds
        self._data[key] = _Entry(value, expires_at)

    def append(self, key: str, item: str, ttl_seconds: float) -> None:
        """RPUSH then EXPIRE."""
        entry = self._entry(key)
        if entry is not None and isinstance(entry.value, list):
            entry.value.append(item)
            entry.expires_at = self.now() + ttl_seconds
        else:
            self.put(key, [item], ttl_seconds)

    def set_field(self, key: str, field: str, value: str) -> None:
        """HSET on an existing hash, its TTL kept."""
        entry = self._entry(key)
        if entry is not None and isinstance(entry.value, dict):
            entry.value[field] = value

    def expire(self, key: str, ttl_seconds: float) -> None:
        entry = self._entry(key)
        if entry is not None:
            entry.expires_at = self.now() + ttl_seconds

    def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    def pttl_ms(self, key: str) -> int:
        """-2 when missing, -1 without expiry, like Redis PTTL."""
        entry = self._entry(key)
        if entry is None:
            return -2
        if entry.expires_at is None:
            return -1
        return max(0, int((entry.expires_at - self.now()) * 1000))

    def keys(self, prefix: str) -> list[str]:
        """Live keys starting with `prefix` (what a SCAN over Redis would find)."""
        return [k for k in list(self._data) if k.startswith(prefix) and self.exists(k)]

    def clear(self) -> None:
        self._data.clear()
