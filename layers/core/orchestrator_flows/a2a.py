"""The A2A client: one JSON-RPC `SendMessage` per step over a shared, pooled httpx client.

Speaks A2A 1.0 by default and 0.3 (`message/send`) where the flow pins it or the agent card
advertises only 0.3. Every failure becomes an `AgentFailure` with a machine code; the engine turns
it into a recorded error step, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator_flows.flow import Agent

MAX_BODY_BYTES = 1 << 20
# An answer nested deeper than this is refused: a JSON-RPC answer needs a handful of levels, and
# deep nesting would cost recursion when the step is stored.
MAX_DEPTH = 32
# Task and context ids are UUIDs in practice; they are stored with the session and sent back.
MAX_ID_LENGTH = 256
MAX_STATE_LENGTH = 64
CARD_PATH = "/.well-known/agent-card.json"
KEEPALIVE_SECONDS = 2.0
OK_STATES = frozenset({"completed"})
WAITING_STATES = frozenset({"input-required", "auth-required"})
FAILED_STATES = {"failed": "agent_task_failed", "rejected": "agent_task_rejected",
                 "canceled": "agent_task_canceled", "cancelled": "agent_task_canceled"}


class AgentFailure(Exception):
    """An agent call that produced no usable answer; `code` says which way it failed."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.attempts: tuple[dict[str, Any], ...] = ()

    @property
    def transient(self) -> bool:
        """Worth another try: the agent could not be reached, timed out before the step's
        deadline, or a gateway in front of it answered 502/503/504."""
        if self.code in ("agent_unreachable", "agent_timeout"):
            return True
        return self.code == "agent_http_error" and self.detail.get("http_status") in (502, 503,
                                                                                        504)

    @property
    def outcome(self) -> str:
        status = self.detail.get("http_status")
        return f"http_{status}" if self.code == "agent_http_error" else self.code

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.detail}


@dataclass(frozen=True)
class AgentReply:
    """An agent's answer reduced to what the orchestrator needs (DESIGN §6)."""

    text: str
    data: dict[str, Any]
    state: str  # completed | input-required | auth-required
    task_id: str | None
    context_id: str | None
    a2a_version: str
    attempts: tuple[dict[str, Any], ...] = ()  # each try: outcome, latency_ms

    @property
    def completed(self) -> bool:
        return self.state in OK_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "data": self.data,
            "state": self.state,
            "task_id": self.task_id,
            "context_id": self.context_id,
        }


@dataclass(frozen=True)
class AgentRequest:
    agent: Agent
    text: str
    metadata: dict[str, Any]
    context_id: str
    task_id: str | None = None
    a2a_version: str | None = None  # pinned by an open task; else flow file, then agent card
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class A2AClient:
    def __init__(
        self,
        timeout_seconds: float,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_connections: int = 100,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_body_bytes = max_body_bytes
        self._transport = transport
        self._max_connections = max_connections
        self._http: httpx.AsyncClient | None = None
        self._versions: dict[str, asyncio.Future[str]] = {}
        # Requests past the pool's size wait here, first come first served, rather than in
        # httpcore's queue: that one rescans every queued request against every connection
        # each time a request starts or ends, so a burst of a few hundred steps spent most of
        # its CPU there and the last in line ran past their deadline.
        self._slots = asyncio.Semaphore(max_connections)

    @property
    def http(self) -> httpx.AsyncClient:
        # Built on first use, on the loop that uses it: built at import time or in a Mangum
        # lifespan it would be bound to a dead loop or rebuilt on every invocation.
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self.timeout_seconds, connect=min(3.0, self.timeout_seconds)),
                limits=httpx.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                    # Below common server keep-alive timeouts (uvicorn: 5 s) so an idle connection
                    # is dropped here before the agent closes it under a request in flight.
                    keepalive_expiry=KEEPALIVE_SECONDS,
                ),
                follow_redirects=False,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def send(self, request: AgentRequest) -> AgentReply:
        """Send one message, trying transient failures again with backoff, every try with the
        same messageId and all within one deadline; raises AgentFailure for every way the agent
        can fail. The reply or failure carries each try's outcome."""
        clock = asyncio.get_running_loop().time
        deadline = clock() + self.timeout_seconds
        policy = request.agent.retry
        attempts: list[dict[str, Any]] = []
        started = clock()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                version = request.a2a_version or await self.protocol_version(request.agent)
                for attempt in range(1, policy.attempts + 1):
                    started = clock()
                    try:
                        reply = await self._send(request, version)
                    except AgentFailure as failure:
                        attempts.append(_attempt(failure.outcome, clock() - started))
                        pause = policy.backoff(attempt)
                        if (not failure.transient or attempt == policy.attempts
                                or clock() + pause >= deadline):
                            failure.attempts = tuple(attempts)
                            raise
                        await asyncio.sleep(pause)
                        continue
                    attempts.append(_attempt("ok", clock() - started))
                    return replace(reply, attempts=tuple(attempts))
                raise AssertionError("unreachable: the last try returns or raises")
        except TimeoutError as exc:
            attempts.append(_attempt("agent_timeout", clock() - started))
            timed_out = AgentFailure(
                "agent_timeout",
                f"agent {request.agent.name} did not answer within {self.timeout_seconds:g} s",
            )
            timed_out.attempts = tuple(attempts)
            raise timed_out from exc

    async def protocol_version(self, agent: Agent) -> str:
        """The flow file's pin, else what the agent card advertises (fetched once per origin)."""
        if agent.a2a_version is not None:
            return agent.a2a_version
        parts = urlsplit(agent.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        future = self._versions.get(origin)
        if future is None:
            future = asyncio.get_running_loop().create_task(self._version_from_card(origin))
            self._versions[origin] = future
        return await asyncio.shield(future)

    async def _version_from_card(self, origin: str) -> str:
        try:
            async with self._slots:
                response = await self.http.get(
                    origin + CARD_PATH, timeout=min(2.0, self.timeout_seconds)
                )
            if response.status_code != 200 or len(response.content) > self.max_body_bytes:
                return "1.0"
            return version_from_card(response.json())
        except (httpx.HTTPError, ValueError):
            return "1.0"

    async def _send(self, request: AgentRequest, version: str) -> AgentReply:
        rpc_id = str(uuid.uuid4())
        body = json.dumps(
            _rpc_body(request, version, rpc_id), separators=(",", ":"), ensure_ascii=False
        ).encode()
        headers = {"content-type": "application/json", "a2a-version": version}
        name = request.agent.name
        try:
            async with self._slots, self.http.stream(
                "POST", request.agent.url, content=body, headers=headers
            ) as response:
                if response.status_code >= 400:
                    raise AgentFailure(
                        "agent_http_error",
                        f"agent {name} answered HTTP {response.status_code}",
                        http_status=response.status_code,
                    )
                raw = await self._read_capped(response, name)
        except httpx.TimeoutException as exc:
            raise AgentFailure("agent_timeout", f"agent {name} timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise AgentFailure(
                "agent_unreachable", f"agent {name} could not be reached: {type(exc).__name__}"
            ) from exc
        return reduce_response(raw, rpc_id, version, name)

    async def _read_capped(self, response: httpx.Response, name: str) -> bytes:
        declared = response.headers.get("content-length")
        too_large = AgentFailure(
            "agent_response_too_large",
            f"agent {name} answered more than {_size(self.max_body_bytes)}",
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_large
        buffer = bytearray()
        async for chunk in response.aiter_bytes():
            buffer += chunk
            if len(buffer) > self.max_body_bytes:
                raise too_large
        return bytes(buffer)


def _problem(value: Any) -> str | None:
    """What makes a parsed answer unfit to be stored and read back, or None: nesting deeper
    than MAX_DEPTH, or a string (key or value) that is not valid Unicode — a lone surrogate,
    which JSON's \\ud800 escapes allow and UTF-8 cannot carry. Walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _is_unicode(item):
                return "a string that is not valid Unicode (a lone surrogate)"
        elif isinstance(item, dict | list):
            if level > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _finite(literal: str) -> float:
    """JSON numbers: `1e400` parses to infinity, which cannot be stored as JSON."""
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"non-finite number {literal}")
    return number


def _non_finite(literal: str) -> Any:
    raise ValueError(f"non-finite number {literal}")


def _attempt(outcome: str, seconds: float) -> dict[str, Any]:
    return {"outcome": outcome, "latency_ms": round(seconds * 1000, 2)}


def _rpc_body(request: AgentRequest, version: str, rpc_id: str) -> dict[str, Any]:
    if version == "0.3":
        message: dict[str, Any] = {
            "kind": "message",
            "role": "user",
            "messageId": request.message_id,
            "contextId": request.context_id,
            "parts": [{"kind": "text", "text": request.text}],
            "metadata": request.metadata,
        }
        method = "message/send"
    else:
        message = {
            "role": "ROLE_USER",
            "messageId": request.message_id,
            "contextId": request.context_id,
            "parts": [{"text": request.text}],
            "metadata": request.metadata,
        }
        method = "SendMessage"
    if request.task_id is not None:
        message["taskId"] = request.task_id
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": {"message": message}}


def version_from_card(card: Any) -> str:
    """"0.3" only when the card advertises 0.3 interfaces and nothing newer; else "1.0"."""
    if not isinstance(card, dict):
        return "1.0"
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
    return "1.0"


def _normalise_state(state: str) -> str:
    """`TASK_STATE_INPUT_REQUIRED` (1.0) and `input-required` (0.3) both become `input-required`."""
    return state.removeprefix("TASK_STATE_").lower().replace("_", "-")


def _collect(parts: Any, texts: list[str], data: dict[str, Any]) -> None:
    if not isinstance(parts, list):
        return
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif "data" in part:
            value = part["data"]
            if isinstance(value, dict):
                data.update(value)
            else:
                # Data that is not an object is kept under "values" (which an object part may
                # have set to anything already).
                values = data.get("values")
                data["values"] = [*(values if isinstance(values, list) else
                                    [] if values is None else [values]), value]


def reduce_response(raw: bytes, rpc_id: str, version: str, name: str) -> AgentReply:
    """Reduce a JSON-RPC answer to text, data, state and task ids, or raise AgentFailure."""

    def malformed(why: str) -> AgentFailure:
        return AgentFailure("agent_bad_response", f"agent {name} sent a malformed answer: {why}")

    try:
        # NaN, Infinity and numbers past a float's range parse in Python but can never be
        # stored as JSON and read back: refused here, with everything else the answer holds.
        envelope = json.loads(raw, parse_constant=_non_finite, parse_float=_finite)
    except UnicodeDecodeError:
        raise malformed("not UTF-8") from None
    except ValueError as exc:
        raise malformed(str(exc) if str(exc).startswith("non-finite") else "not JSON") from None
    except RecursionError:
        raise malformed(f"nested deeper than {MAX_DEPTH} levels") from None
    unfit = _problem(envelope)
    if unfit is not None:
        raise malformed(unfit)
    if not isinstance(envelope, dict) or envelope.get("jsonrpc") != "2.0":
        raise malformed("not a JSON-RPC 2.0 response")
    if "error" in envelope:
        error = envelope["error"] if isinstance(envelope["error"], dict) else {}
        code = error.get("code")
        message = error.get("message")
        raise AgentFailure(
            "agent_rpc_error",
            f"agent {name} answered a JSON-RPC error: "
            f"{message if isinstance(message, str) else ''}",
            # JSON-RPC's codes are 32-bit integers: anything else is not one.
            rpc_code=code if isinstance(code, int) and not isinstance(code, bool)
            and -2**31 <= code < 2**31 else None,
        )
    if envelope.get("id") != rpc_id:
        raise malformed("response id does not match the request")
    result = envelope.get("result")
    if not isinstance(result, dict):
        raise malformed("no result object")

    if isinstance(result.get("task"), dict):
        task: dict[str, Any] | None = result["task"]
    elif isinstance(result.get("message"), dict):
        task, result = None, result["message"]
    elif result.get("kind") == "task":
        task = result
    elif result.get("kind") == "message":
        task = None
    else:
        raise malformed("result is neither a task nor a message")

    texts: list[str] = []
    data: dict[str, Any] = {}
    if task is None:
        if not isinstance(result.get("parts"), list):
            raise malformed("message without parts")
        _collect(result["parts"], texts, data)
        return AgentReply("\n".join(texts), data, "completed", _an_id(result.get("taskId")),
                          _an_id(result.get("contextId")), version)

    status = task.get("status")
    task_id = _an_id(task.get("id"))
    if task_id is None or not isinstance(status, dict):
        raise malformed(f"task without an id (a string of 1 to {MAX_ID_LENGTH} characters) "
                        "or without a status")
    if not isinstance(status.get("state"), str):
        raise malformed("task status without state")
    state = _normalise_state(status["state"])[:MAX_STATE_LENGTH]
    message = status.get("message")
    if isinstance(message, dict):
        _collect(message.get("parts"), texts, data)
    artifacts = task.get("artifacts")
    for artifact in artifacts if isinstance(artifacts, list) else []:
        if isinstance(artifact, dict):
            _collect(artifact.get("parts"), texts, data)
    text = "\n".join(texts)
    if state in FAILED_STATES:
        raise AgentFailure(
            # Whole: the engine masks it before it shortens it (a card cut in two would not
            # be recognised).
            FAILED_STATES[state], f"agent {name} ended the task as {state}: {text}",
            task_id=task_id, task_state=state,
        )
    if state not in OK_STATES and state not in WAITING_STATES:
        raise AgentFailure(
            "agent_task_unfinished",
            f"agent {name} returned the task in state {state!r}, not finished nor waiting",
            task_id=task_id, task_state=state,
        )
    return AgentReply(text, data, state, task_id, _an_id(task.get("contextId")), version)


def _an_id(value: Any) -> str | None:
    """A task or context id as the agent gave it, if it is one: a string of sensible length."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


def _size(count: int) -> str:
    """A byte count as people write it (and as no masking rule takes for a code)."""
    return f"{count / (1 << 20):g} MiB" if count >= 1 << 20 else f"{count / 1024:g} KiB"

