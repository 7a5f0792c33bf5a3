"""A streaming agent's answer: `SendStreamingMessage` (A2A 1.0) or `message/stream` (0.3), read
as Server-Sent Events whose `data` is each a JSON-RPC response, and folded into the one task or
message a buffered answer would have been, so that `answers` reduces it the same way.

The stream is a task's life (the task, then status and artifact updates) or one message. Reading
stops at the first message, or when the task is finished, failed or waiting for the caller: the
stream ends there by the specification (0.3 marks it `final`, but not on every waiting state).
Whatever ends it earlier is a broken stream, and what had arrived by then is kept (`arrived`).
"""

from __future__ import annotations

from typing import Any

from orchestrator_flows.a2a.answers import (
    FAILED_STATES,
    MAX_STATE_LENGTH,
    check_envelope,
    from_message,
    from_task,
    normalise_state,
    parts_of,
    result_of,
    tidy_id,
)
from orchestrator_flows.a2a.messages import OK_STATES, WAITING_STATES, AgentReply
from orchestrator_flows.errors import AgentFailure, FailureCode

# Where a task's stream ends: finished, failed, or waiting for the caller.
ENDING_STATES = OK_STATES | WAITING_STATES | set(FAILED_STATES)
_FIELD = b"data:"
_LONGEST_STATE = MAX_STATE_LENGTH + len("TASK_STATE_")


class ServerSentEvents:
    """The `data` of each event, as the bytes of a stream arrive (the SSE format of the HTML
    standard: lines end in CR, LF or CRLF, a blank line ends an event, fields other than `data`
    and comments are ignored)."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # an unfinished line, in the chunks it came in
        self._data: list[bytes] = []
        self._after_cr = False  # the last chunk ended in CR: an LF first in this one is its pair
        self._started = False  # a first line has been read

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = False
        if b"\n" not in chunk and b"\r" not in chunk:
            # No line ends here: kept whole, not joined again with every chunk (an agent
            # dripping one long line would otherwise cost the square of its length).
            if chunk:
                self._pending.append(chunk)
            return []
        text = b"".join((*self._pending, chunk))
        # A CR ends its line at once (an event ended by CR CR is not held back until more
        # comes); should the next chunk begin with LF, that LF was the rest of a CRLF.
        self._after_cr = text.endswith(b"\r")
        lines = _lines(text)
        if not self._started:
            self._started = True
            lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")  # a byte order mark is no data
        rest = lines.pop()  # an unfinished line
        self._pending = [rest] if rest else []
        events = []
        for line in lines:
            if not line:
                if self._data:
                    data = b"\n".join(self._data)
                    self._data = []
                    if data:  # an event with an empty data field carries nothing
                        events.append(data)
            elif line.startswith(_FIELD):
                value = line[len(_FIELD):]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return events


def _lines(text: bytes) -> list[bytes]:
    return text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")


class StreamFold:
    """The events of one stream folded into a task (or a message), event by event."""

    def __init__(self, rpc_id: str, version: str, name: str, idle_seconds: float) -> None:
        self.rpc_id = rpc_id
        self.version = version
        self.name = name
        self.idle_seconds = idle_seconds
        self.opened = False  # the agent answered with a stream: it has the message
        self.events = 0
        self.task: dict[str, Any] | None = None
        self.message: dict[str, Any] | None = None
        self._artifact_at: dict[str, int] = {}  # where each artifact (by string id) is kept

    def add(self, data: bytes) -> bool:
        """Fold one event's data in; whether the answer is complete. Raises AgentFailure for
        an event that is not a JSON-RPC answer fit to keep, or a JSON-RPC error."""
        result = result_of(check_envelope(data, self.name), self.rpc_id, self.name)
        self.events += 1
        kind, event = _event(result)
        if kind == "task":
            self.task = {**event, "artifacts": []}
            self._artifact_at = {}
            for artifact in _artifacts(event):
                self._keep_artifact(self.task["artifacts"], artifact)
        elif kind == "message":
            if self.task is None:
                self.message = event
                return True
            # A message inside a task's stream: the agent's latest word on it.
            self.task["status"] = {**self._status(), "message": event}
        elif kind == "status":
            self._task_for(event)["status"] = event.get("status")
        elif kind == "artifact":
            self._fold_artifact(self._task_for(event), event)
        else:
            raise AgentFailure(FailureCode.BAD_RESPONSE,
                               f"agent {self.name} sent a stream event that is neither a task, "
                               "a message nor a task update")
        return self.task is not None and self._state() in ENDING_STATES

    def reply(self) -> AgentReply:
        """The complete answer, reduced as a buffered one would be (or the AgentFailure it
        is)."""
        if self.message is not None:
            return from_message(self.message, self.version, self.name)
        assert self.task is not None
        return from_task(self.task, self.version, self.name)

    def broken(self, why: str) -> AgentFailure:
        """The stream ended, stalled or broke before the answer was complete: a failure that
        carries what had arrived (text and data, the task's id and state)."""
        detail: dict[str, Any] = {}
        texts: list[str] = []
        data: dict[str, Any] = {}
        if self.task is not None:
            message = self._status().get("message")
            if isinstance(message, dict):
                parts_of(message.get("parts"), texts, data)
            for artifact in self.task["artifacts"]:
                parts_of(artifact.get("parts"), texts, data)
            task_id, state = tidy_id(self.task.get("id")), self._state()
            if task_id is not None:
                detail["task_id"] = task_id
            if state:
                detail["task_state"] = state[:MAX_STATE_LENGTH]
        failure = AgentFailure(
            FailureCode.STREAM_BROKEN,
            f"agent {self.name}'s stream broke after {self.events} event"
            f"{'' if self.events == 1 else 's'}: {why}", **detail)
        failure.arrived = ("\n".join(texts), data)
        return failure

    def _task_for(self, event: dict[str, Any]) -> dict[str, Any]:
        """The task an update is for: the stream's (started by the update if the agent sent
        no task first)."""
        if self.task is None:
            self.task = {"id": event.get("taskId"), "contextId": event.get("contextId"),
                         "status": {}, "artifacts": []}
        return self.task

    def _status(self) -> dict[str, Any]:
        assert self.task is not None
        status = self.task.get("status")
        return status if isinstance(status, dict) else {}

    def _state(self) -> str:
        state = self._status().get("state")
        # Cut first: a state is short, and it is looked at after every event.
        return normalise_state(state[:_LONGEST_STATE]) if isinstance(state, str) else ""

    def _fold_artifact(self, task: dict[str, Any], event: dict[str, Any]) -> None:
        artifact = event.get("artifact")
        if isinstance(artifact, dict):
            self._keep_artifact(task["artifacts"], artifact, append=event.get("append") is True)

    def _keep_artifact(self, artifacts: list[dict[str, Any]], artifact: dict[str, Any],
                       append: bool = False) -> None:
        """An artifact added, or put in place of the one with its id, or (`append`) its parts
        added to that one's. Found by id in a dict and extended in place: a scan of the list
        per event, or a copy per append, would cost the square of what an agent streams."""
        key = artifact.get("artifactId")
        at = self._artifact_at.get(key) if isinstance(key, str) else None
        if at is None:
            if isinstance(key, str):
                self._artifact_at[key] = len(artifacts)
            artifacts.append(_owned(artifact))
        elif append:
            more = artifact.get("parts")
            artifacts[at]["parts"].extend(more if isinstance(more, list) else [])
        else:
            artifacts[at] = _owned(artifact)


# A 1.0 event is an object under one of these keys; a 0.3 event says its `kind`.
_KINDS = (("task", "task"), ("message", "message"), ("statusUpdate", "status"),
          ("artifactUpdate", "artifact"))
_KINDS_03 = {"task": "task", "message": "message", "status-update": "status",
             "artifact-update": "artifact"}


def _event(result: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """What kind of event a result is, and the event (either version's form, as a buffered
    answer's result is read)."""
    for key, kind in _KINDS:
        if isinstance(result.get(key), dict):
            return kind, result[key]
    found = result.get("kind")
    return _KINDS_03.get(found) if isinstance(found, str) else None, result


def _artifacts(task: dict[str, Any]) -> list[dict[str, Any]]:
    found = task.get("artifacts")
    return [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []


def _owned(artifact: dict[str, Any]) -> dict[str, Any]:
    """An artifact with a list of parts of the fold's own, to extend."""
    parts = artifact.get("parts")
    return {**artifact, "parts": list(parts) if isinstance(parts, list) else []}
