"""API Gateway event fixtures of `events/`, shared by the Lambda tests and the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[2] / "events"
# The functions of the archive, whose fixtures tell a story of their own (with ARCHIVE_TABLE).
ARCHIVE_FUNCTIONS = ("list_calls", "erase_account", "sweeper")


def load_event(function: str, name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / function / f"{name}.json").read_text())
    return event


def turn_event(body: dict[str, Any], request_id: str = "req-1") -> dict[str, Any]:
    """A POST /orchestrate event for any body: the shape of the fixtures, another payload."""
    event = load_event("orchestrate", "call_01_greeting")
    event["body"] = json.dumps(body)
    event["headers"]["content-length"] = str(len(event["body"]))
    event["requestContext"]["requestId"] = request_id
    return event


def session_event(function: str, call_identify_id: str) -> dict[str, Any]:
    """A GET/DELETE event of `function` for another call id."""
    event = load_event(function, "live")
    raw = json.dumps(event).replace("EVT-CALL-001", call_identify_id)
    result: dict[str, Any] = json.loads(raw)
    return result
