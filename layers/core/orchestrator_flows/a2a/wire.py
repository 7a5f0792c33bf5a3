"""The JSON-RPC request of each A2A protocol version, and the version an agent card asks for."""

from __future__ import annotations

from typing import Any

from orchestrator_flows.a2a.messages import AgentRequest

CARD_PATH = "/.well-known/agent-card.json"
DEFAULT_VERSION = "1.0"


def rpc_body(request: AgentRequest, version: str, rpc_id: str,
             streaming: bool = False) -> dict[str, Any]:
    """`SendMessage` (1.0) or `message/send` (0.3), carrying the caller's text as one part;
    `SendStreamingMessage` or `message/stream` when `streaming`."""
    if version == "0.3":
        message: dict[str, Any] = {
            "kind": "message",
            "role": "user",
            "messageId": request.message_id,
            "contextId": request.context_id,
            "parts": [{"kind": "text", "text": request.text}],
            "metadata": request.metadata,
        }
        method = "message/stream" if streaming else "message/send"
    else:
        message = {
            "role": "ROLE_USER",
            "messageId": request.message_id,
            "contextId": request.context_id,
            "parts": [{"text": request.text}],
            "metadata": request.metadata,
        }
        method = "SendStreamingMessage" if streaming else "SendMessage"
    if request.task_id is not None:
        message["taskId"] = request.task_id
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": {"message": message}}


def version_from_card(card: Any) -> str:
    """"0.3" only when the card advertises 0.3 interfaces and nothing newer; else "1.0"."""
    if not isinstance(card, dict):
        return DEFAULT_VERSION
    versions = {str(card["protocolVersion"])} if "protocolVersion" in card else set()
    interfaces = card.get("supportedInterfaces")
    if isinstance(interfaces, list):
        versions |= {
            str(i["protocolVersion"])
            for i in interfaces
            if isinstance(i, dict) and "protocolVersion" in i
        }
    if versions and all(v == "0.3" or v.startswith("0.3.") for v in versions):
        return "0.3"
    return DEFAULT_VERSION


def card_streams(card: Any) -> bool:
    """Whether an agent card says the agent streams (`capabilities.streaming`, both forms)."""
    capabilities = card.get("capabilities") if isinstance(card, dict) else None
    return isinstance(capabilities, dict) and capabilities.get("streaming") is True
