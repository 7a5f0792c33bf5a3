"""The A2A client: one JSON-RPC `SendMessage` per step over a shared, pooled httpx client.

Speaks A2A 1.0 by default and 0.3 (`message/send`) where the flow pins it or the agent card
advertises only 0.3. Every failure becomes an `AgentFailure` with a `FailureCode`; the engine
turns it into a recorded error step, never a 500.

- `messages`: what the engine sends (`AgentRequest`) and gets back (`AgentReply`)
- `wire`: the JSON-RPC request of each protocol version, and the version an agent card asks for
- `answers`: an agent's JSON-RPC answer reduced to an `AgentReply`, or the failure it is
- `client`: the pooled client: deadline, retries with backoff, card discovery, capped reads
"""

from orchestrator_flows.a2a.client import A2AClient
from orchestrator_flows.a2a.messages import AgentReply, AgentRequest
from orchestrator_flows.a2a.wire import version_from_card

__all__ = ["A2AClient", "AgentReply", "AgentRequest", "version_from_card"]
