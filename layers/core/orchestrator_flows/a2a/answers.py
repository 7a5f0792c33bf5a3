"""An agent's JSON-RPC answer reduced to an `AgentReply`, or to the `AgentFailure` it is.

Whatever the answer holds, what comes out can be stored as JSON and read back: non-finite
numbers, lone surrogates and deep nesting are refused here (`agent_bad_response`), ids and
states are bounded.
"""

from __future__ import annotations

import math
import re
from typing import Any

from orchestrator_flows import untrusted
from orchestrator_flows.a2a.messages import OK_STATES, WAITING_STATES, AgentReply
from orchestrator_flows.errors import AgentFailure, FailureCode

# An answer nested deeper than this is refused: a JSON-RPC answer needs a handful of levels, and
# deep nesting would cost recursion when the step is stored.
MAX_DEPTH = 32
# Task and context ids are UUIDs in practice; they are stored with the session and sent back.
MAX_ID_LENGTH = 256
MAX_STATE_LENGTH = 64
FAILED_STATES = {"failed": FailureCode.TASK_FAILED, "rejected": FailureCode.TASK_REJECTED,
                 "canceled": FailureCode.TASK_CANCELED, "cancelled": FailureCode.TASK_CANCELED}


def reduce_response(raw: bytes, rpc_id: str, version: str, name: str) -> AgentReply:
    """Reduce a JSON-RPC answer to text, data, state and task ids, or raise AgentFailure."""
    result = result_of(check_envelope(raw, name), rpc_id, name)
    if isinstance(result.get("task"), dict):
        return from_task(result["task"], version, name)
    if isinstance(result.get("message"), dict):
        return from_message(result["message"], version, name)
    if result.get("kind") == "task":
        return from_task(result, version, name)
    if result.get("kind") == "message":
        return from_message(result, version, name)
    raise _malformed(name, "result is neither a task nor a message")


def _malformed(name: str, why: str) -> AgentFailure:
    return AgentFailure(FailureCode.BAD_RESPONSE, f"agent {name} sent a malformed answer: {why}")


def check_envelope(raw: bytes, name: str) -> dict[str, Any]:
    """The parsed JSON-RPC 2.0 envelope, fit to be stored and read back."""
    try:
        # NaN, Infinity and numbers past a float's range parse in Python but can never be
        # stored as JSON and read back: refused here, with everything else the answer holds.
        envelope = untrusted.loads(raw, parse_constant=_non_finite, parse_float=_finite)
    except UnicodeDecodeError:
        raise _malformed(name, "not UTF-8") from None
    except ValueError as exc:
        why = str(exc) if str(exc).startswith("non-finite") else "not JSON"
        raise _malformed(name, why) from None
    except RecursionError:
        raise _malformed(name, f"nested deeper than {MAX_DEPTH} levels") from None
    unfit = _problem(envelope) if _may_be_unfit(raw) else None
    if unfit is not None:
        raise _malformed(name, unfit)
    if not isinstance(envelope, dict) or envelope.get("jsonrpc") != "2.0":
        raise _malformed(name, "not a JSON-RPC 2.0 response")
    return envelope


def result_of(envelope: dict[str, Any], rpc_id: str, name: str) -> dict[str, Any]:
    """The envelope's result object; a JSON-RPC error object raises agent_rpc_error."""
    if "error" in envelope:
        error = envelope["error"] if isinstance(envelope["error"], dict) else {}
        code = error.get("code")
        message = error.get("message")
        raise AgentFailure(
            FailureCode.RPC_ERROR,
            f"agent {name} answered a JSON-RPC error: "
            f"{message if isinstance(message, str) else ''}",
            # JSON-RPC's codes are 32-bit integers: anything else is not one.
            rpc_code=code if isinstance(code, int) and not isinstance(code, bool)
            and -2**31 <= code < 2**31 else None,
        )
    if envelope.get("id") != rpc_id:
        raise _malformed(name, "response id does not match the request")
    result = envelope.get("result")
    if not isinstance(result, dict):
        raise _malformed(name, "no result object")
    return result


def from_message(message: dict[str, Any], version: str, name: str) -> AgentReply:
    """A direct message: the agent's work is done."""
    if not isinstance(message.get("parts"), list):
        raise _malformed(name, "message without parts")
    texts: list[str] = []
    data: dict[str, Any] = {}
    parts_of(message["parts"], texts, data)
    return AgentReply("\n".join(texts), data, "completed", tidy_id(message.get("taskId")),
                      tidy_id(message.get("contextId")), version)


def from_task(task: dict[str, Any], version: str, name: str) -> AgentReply:
    """A task: finished, waiting for the caller, or one of the ways it fails."""
    status = task.get("status")
    task_id = tidy_id(task.get("id"))
    if task_id is None or not isinstance(status, dict):
        raise _malformed(name, f"task without an id (a string of 1 to {MAX_ID_LENGTH} "
                         "characters) or without a status")
    if not isinstance(status.get("state"), str):
        raise _malformed(name, "task status without state")
    state = normalise_state(status["state"])[:MAX_STATE_LENGTH]
    texts: list[str] = []
    data: dict[str, Any] = {}
    message = status.get("message")
    if isinstance(message, dict):
        parts_of(message.get("parts"), texts, data)
    artifacts = task.get("artifacts")
    for artifact in artifacts if isinstance(artifacts, list) else []:
        if isinstance(artifact, dict):
            parts_of(artifact.get("parts"), texts, data)
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
            FailureCode.TASK_UNFINISHED,
            f"agent {name} returned the task in state {state!r}, not finished nor waiting",
            task_id=task_id, task_state=state,
        )
    return AgentReply(text, data, state, task_id, tidy_id(task.get("contextId")), version)


def normalise_state(state: str) -> str:
    """`TASK_STATE_INPUT_REQUIRED` (1.0) and `input-required` (0.3) both become `input-required`."""
    return state.removeprefix("TASK_STATE_").lower().replace("_", "-")


def parts_of(parts: Any, texts: list[str], data: dict[str, Any]) -> None:
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


def tidy_id(value: Any) -> str | None:
    """A task or context id as the agent gave it, if it is one: a string of sensible length."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


# A lone surrogate can only come from a \ud800-\udfff escape or from its UTF-8 bytes (which
# json.loads lets through): without either, no string of the answer holds one.
_SURROGATE = re.compile(rb"\\u[dD][89abAB]|\\u[dD][c-fC-F]|\xed[\xa0-\xbf]")


def _may_be_unfit(raw: bytes) -> bool:
    """Whether `_problem` has anything to find: an answer with fewer brackets than MAX_DEPTH
    cannot nest deeper, and one without surrogate escapes or bytes holds no lone surrogate.
    Most answers are both, and skip the walk."""
    return (raw.count(b"{") + raw.count(b"[") > MAX_DEPTH
            # Two substring searches (memchr-fast) before the regex, whose scan looks at each
            # byte in Python's regex engine: it was 0.5 % of a step's instructions.
            or ((b"\xed" in raw or b"\\u" in raw) and _SURROGATE.search(raw) is not None))


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
