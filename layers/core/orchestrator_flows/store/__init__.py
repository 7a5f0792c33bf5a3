"""The session store (DESIGN §5) and its backends.

- `session_store`: the storage rules (claim lease and fencing token, reply records, TTLs)
- `port`: the five atomic primitives a backend runs; `results`: what a claim finds
- `keys`: the keys of one call; `codec`: how a session and a reply record are flattened
- `redis_backend` (Lua scripts) and `memory_backend` (embedded, for local runs)
"""

from orchestrator_flows.store.keys import CallKeys
from orchestrator_flows.store.port import Backend
from orchestrator_flows.store.results import Busy, ClaimResult, Ended, Recorded, Taken
from orchestrator_flows.store.session_store import (
    Claim,
    Idempotency,
    Replay,
    SessionStore,
    retry_after_seconds,
)

__all__ = ["Backend", "Busy", "CallKeys", "Claim", "ClaimResult", "Ended", "Idempotency",
           "Recorded", "Replay", "SessionStore", "Taken", "retry_after_seconds"]
