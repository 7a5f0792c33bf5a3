"""The ten demo agents of the default flow as real A2A servers built with the official a2a-sdk.

Local runs and tests only (the `demo` extra); the core never imports this module. Each agent is
its own ASGI app at the root of its own origin: JSON-RPC at `POST /` (A2A 1.0, and 0.3 through
the SDK's compatibility layer) and its card at `/.well-known/agent-card.json`. Answers are
deterministic: derived from the input, never random.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import new_data_part, new_message, new_text_part
from a2a.server.agent_execution.agent_executor import AgentExecutor
from a2a.server.agent_execution.context import RequestContext
from a2a.server.events.event_queue import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks.inmemory_task_store import InMemoryTaskStore
from a2a.server.tasks.task_updater import TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Task,
    TaskState,
    TaskStatus,
)
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orchestrator_flows.local.serving import PortTaken, bind

logger = logging.getLogger(__name__)

AGENT_NAMES: tuple[str, ...] = (
    "greeting", "auth", "refund", "billing", "booking", "complaint", "account", "balance",
    "closing", "fallback",
)
DEFAULT_BASE_PORT = 9101
CARD_PATH = "/.well-known/agent-card.json"
OTP = re.compile(r"\b\d{4,8}\b")


def agent_urls(host: str = "127.0.0.1", base_port: int = DEFAULT_BASE_PORT) -> dict[str, str]:
    return {name: f"http://{host}:{base_port + i}/" for i, name in enumerate(AGENT_NAMES)}


def _number(seed: str, modulo: int) -> int:
    return int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % modulo


def _answer(name: str, text: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What each domain agent says: plausible, deterministic data derived from the call."""
    call = str(meta.get("call_identify_id", ""))
    seed = f"{name}:{call}"
    answers: dict[str, tuple[str, dict[str, Any]]] = {
        "refund": ("I have filed a refund for the duplicate charge.",
                   {"refund_id": f"RF-{_number(seed, 100000):05d}",
                    "amount": round(5 + _number(seed, 9500) / 100, 2), "currency": "USD"}),
        "billing": ("Your last bill is available; no payment is overdue.",
                    {"invoice_id": f"INV-{_number(seed, 100000):05d}",
                     "balance_due": round(_number(seed, 20000) / 100, 2)}),
        "booking": ("Your booking is confirmed.",
                    {"booking_ref": f"BK{_number(seed, 1000000):06d}"}),
        "complaint": ("I have logged your complaint; a specialist will follow up.",
                      {"case_id": f"CASE-{_number(seed, 100000):05d}", "priority": "normal"}),
        "account": ("Your account details are up to date.",
                    {"account_status": "active", "tier": "standard"}),
        "balance": ("Here is your current balance.",
                    {"balance": round(_number(seed, 500000) / 100, 2), "currency": "USD"}),
        "closing": ("Thank you for calling Acme. Goodbye!", {"survey_offered": True}),
        "fallback": ("Sorry, I did not understand that. Could you say it another way?",
                     {"understood": False}),
    }
    return answers.get(name, (f"{name} handled your request.", {}))


class DemoExecutor(AgentExecutor):
    """One demo agent's behaviour: greeting answers a plain Message, auth asks for a one-time
    code first (input-required) and completes on a turn that carries one, the rest complete."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        task_id, context_id = context.task_id, context.context_id
        if message is None or not task_id or not context_id:
            return
        meta = json_format.MessageToDict(message.metadata) if message.HasField("metadata") else {}
        text = context.get_user_input()
        echo = {"agent": self.name, "call_identify_id": meta.get("call_identify_id"),
                "intent": meta.get("intent")}
        if self.name == "greeting":
            reply = new_message(
                [new_text_part("Welcome to Acme support. How can I help you today?"),
                 new_data_part({**echo, "greeted": True})],
                context_id=context_id,
            )
            await event_queue.enqueue_event(reply)
            return

        if context.current_task is None:
            await event_queue.enqueue_event(
                Task(id=task_id, context_id=context_id,
                     status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED), history=[message])
            )
        updater = TaskUpdater(event_queue=event_queue, task_id=task_id, context_id=context_id)
        if self.name == "auth":
            if OTP.search(text) is None:
                await updater.requires_input(updater.new_agent_message(
                    [new_text_part("To verify your identity, please tell me the one-time code "
                                   "we just sent to your phone.")]))
                return
            await updater.complete(updater.new_agent_message(
                [new_text_part("Thank you, you are verified."),
                 new_data_part({**echo, "authenticated": True})]))
            return
        reply_text, data = _answer(self.name, text, meta)
        await updater.add_artifact([new_text_part(reply_text), new_data_part({**echo, **data})],
                                   name=f"{self.name}-result")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        if context.task_id and context.context_id:
            await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def agent_card(name: str, url: str, protocol_versions: Sequence[str] = ("1.0",),
               streaming: bool = False) -> AgentCard:
    return AgentCard(
        name=f"Acme {name} agent",
        description=f"Demo {name} agent for Orchestrator Flows",
        version="1.0.0",
        capabilities=AgentCapabilities(streaming=streaming, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
        skills=[AgentSkill(id=name, name=name, description=f"The {name} stage of a call",
                           tags=["demo"])],
        supported_interfaces=[
            AgentInterface(protocol_binding="JSONRPC", protocol_version=v, url=url)
            for v in protocol_versions
        ],
    )


def card_v03(card: AgentCard, url: str) -> dict[str, Any]:
    """The card as an A2A 0.3 client expects it (`protocolVersion`, `url`, `preferredTransport`)."""
    return {
        "name": card.name, "description": card.description, "version": card.version,
        "url": url, "protocolVersion": "0.3.0", "preferredTransport": "JSONRPC",
        "capabilities": {"streaming": card.capabilities.streaming, "pushNotifications": False},
        "defaultInputModes": list(card.default_input_modes),
        "defaultOutputModes": list(card.default_output_modes),
        "skills": [{"id": s.id, "name": s.name, "description": s.description,
                    "tags": list(s.tags)} for s in card.skills],
    }


def build_agent_app(
    name: str,
    url: str,
    *,
    protocol_versions: Sequence[str] = ("1.0",),
    executor: AgentExecutor | None = None,
    streaming: bool = False,
) -> Starlette:
    """One agent as an ASGI app; `protocol_versions` is what its card advertises, `streaming`
    whether it says it streams (SendStreamingMessage / message/stream)."""
    card = agent_card(name, url, protocol_versions, streaming)
    handler = DefaultRequestHandler(
        agent_executor=executor or DemoExecutor(name),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    routes = list(create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True))
    if "1.0" in protocol_versions:
        routes += create_agent_card_routes(agent_card=card)
    else:
        legacy = card_v03(card, url)

        async def serve_card(_: Request) -> JSONResponse:
            return JSONResponse(legacy)

        routes.append(Route(CARD_PATH, serve_card, methods=["GET"]))
    return Starlette(routes=routes)


async def serve_agents(
    host: str = "127.0.0.1",
    base_port: int = DEFAULT_BASE_PORT,
    names: Sequence[str] = AGENT_NAMES,
) -> None:
    """Run one uvicorn server per agent in this loop until cancelled. Every port is taken
    before any agent starts: one in use fails the whole start, naming it (PortTaken)."""
    urls = agent_urls(host, base_port)
    sockets = []
    try:
        for name in names:
            sockets.append(bind(host, base_port + AGENT_NAMES.index(name)))
    except PortTaken:
        for sock in sockets:
            sock.close()
        raise
    servers = []
    for name in names:
        config = uvicorn.Config(build_agent_app(name, urls[name]), log_level="warning",
                                lifespan="off")
        servers.append(uvicorn.Server(config))
        logger.info("agent %-9s at %s", name, urls[name])
    tasks = [asyncio.create_task(server.serve(sockets=[sock]))
             for server, sock in zip(servers, sockets, strict=True)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for server in servers:
            server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        for sock in sockets:
            sock.close()


__all__ = ["AGENT_NAMES", "DEFAULT_BASE_PORT", "DemoExecutor", "agent_card", "agent_urls",
           "build_agent_app", "serve_agents"]
