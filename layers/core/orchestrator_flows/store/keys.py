"""Every key of one call, under one Redis Cluster hash tag (DESIGN §5)."""

from __future__ import annotations

from dataclasses import dataclass

KEY_PREFIX = "of"


@dataclass(frozen=True, slots=True)
class CallKeys:
    """The `{id}` hash tag keeps them in one Redis Cluster slot, so one Lua script may touch
    them all."""

    state: str
    steps: str
    claim: str
    replies: str  # Idempotency-Key digest -> reply record
    ended: str  # set by DELETE, for the session TTL: a late turn must not start the call again
    queue: str  # turns waiting for the claim, in arrival order: `<gives up, ms>:<token>`
    bell: str  # pushed when the claim is let go: wakes the first turn in line
    chime: str  # pushed then too, once per other waiting turn: they learn their new place

    @classmethod
    def of(cls, call_identify_id: str) -> CallKeys:
        tag = f"{KEY_PREFIX}:{{{call_identify_id}}}"
        return cls(state=f"{tag}:state", steps=f"{tag}:steps", claim=f"{tag}:claim",
                   replies=f"{tag}:replies", ended=f"{tag}:ended", queue=f"{tag}:queue",
                   bell=f"{tag}:bell", chime=f"{tag}:chime")

    @property
    def tag(self) -> str:
        """What every key of the call starts with."""
        return self.state.rsplit(":", 1)[0]
