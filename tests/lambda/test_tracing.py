"""X-Ray subsegments of a turn, caught the way the X-Ray daemon would: as UDP datagrams on a
loopback port. Runs the orchestrate function in a child process with tracing on, as Lambda
would start it (its trace header in the environment)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import json, sys
from orchestrator_flows.local.invoke import LocalContext, load_function
from tests.support.events import turn_event

handler = load_function("orchestrate").handler
assert not [m for m in sys.modules if m.startswith(("aws_xray_sdk", "botocore."))]  # no SDK
body = {"call_identify_id": "TRACE-1", "account_id": "A", "eci": "E",
        "input_message": "my secret words", "intent": "greeting"}
print(json.dumps(handler(turn_event(body), LocalContext("orchestrate"))["statusCode"]))
"""


def subsegments(datagrams: list[bytes]) -> list[dict[str, Any]]:
    """Every subsegment sent, nested ones included."""
    found: list[dict[str, Any]] = []

    def walk(entity: dict[str, Any]) -> None:
        found.append(entity)
        for child in entity.get("subsegments", []):
            walk(child)

    for datagram in datagrams:
        walk(json.loads(datagram.split(b"\n", 1)[1]))
    return found


def test_claim_agent_and_commit_are_traced_with_call_and_agent(
    lambda_env: dict[str, str]
) -> None:
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)
    port = daemon.getsockname()[1]
    env = {
        **os.environ,
        "POWERTOOLS_TRACE_DISABLED": "false",
        "LAMBDA_TASK_ROOT": str(ROOT),
        "_X_AMZN_TRACE_ID": "Root=1-6744e2a0-0123456789abcdef01234567;"
                            "Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    datagrams = []
    try:
        while True:
            datagrams.append(daemon.recv(65536))
    except TimeoutError:
        pass
    daemon.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "200"
    by_name = {s["name"]: s for s in subsegments(datagrams)}
    assert {"## claim", "## agent", "## commit"} <= set(by_name), sorted(by_name)
    assert by_name["## agent"]["annotations"] == {"call_identify_id": "TRACE-1",
                                                  "agent": "greeting"}
    assert by_name["## claim"]["annotations"]["call_identify_id"] == "TRACE-1"
    assert not any(b"my secret words" in d for d in datagrams)  # no text of the turn
    for name in ("## claim", "## agent", "## commit"):  # children of Lambda's own segment
        span = by_name[name]
        assert (span["trace_id"], span["parent_id"], span["type"]) == (
            "1-6744e2a0-0123456789abcdef01234567", "53995c3f42cd8ad8", "subsegment")
        assert span["start_time"] <= span["end_time"]
    assert (by_name["## claim"]["end_time"] <= by_name["## agent"]["start_time"]
            <= by_name["## agent"]["end_time"] <= by_name["## commit"]["start_time"])
