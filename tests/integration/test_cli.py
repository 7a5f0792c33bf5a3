"""The command line as a user runs it: the README's demo command end to end, a broken flow
file stopping `serve` before it binds a port, help and errors a newcomer can act on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from orchestrator_flows import __version__
from tests.support.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def readme_demo_command() -> str:
    """The first command of the README's opening block: the one a newcomer runs first."""
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```") + 1]
    return block.split("#")[0].strip()


@pytest.mark.slow
def test_the_readme_demo_command_runs_a_whole_call() -> None:
    command = readme_demo_command()
    assert command == "bash scripts/demo"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ORCHESTRATOR_CONFIG")}
    done = subprocess.run(command.split(), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    transcript = done.stdout
    for stage in ("GREETING", "AUTHENTICATION", "INTENT_CAPTURE", "FULFILLMENT", "CLOSING"):
        assert stage in transcript
    assert "input_required" in transcript  # the auth agent asked for the one-time code
    assert "agent fallback" in transcript
    assert '"is_complete": true' in transcript
    assert "embedded in-memory store" in done.stderr  # announced in the log


def test_serve_refuses_a_broken_flow_file_naming_file_and_line(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("agents:\n  a: {url: 'http://x/'}\nfallback_agent: a\nstages:\n"
                    "  - id: 1\n    name: ONLY\n    intents: {go: ghost}\n")
    env = {**os.environ, "ORCHESTRATOR_CONFIG": str(flow)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator_flows.local.cli", "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert f"{flow}:7: " in done.stderr
    assert "unknown agent 'ghost'" in done.stderr


def test_serve_refuses_bad_settings_naming_the_variable() -> None:
    env = {**os.environ, "SESSION_TTL_SECONDS": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator_flows.local.cli", "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "SESSION_TTL_SECONDS" in done.stderr


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator_flows.local.cli", *args],
                          cwd=ROOT, env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_version_and_help_say_what_a_newcomer_needs() -> None:
    assert cli("--version").stdout.strip() == f"orchestrator-flows {__version__}"
    def help_of(command: str) -> str:
        return " ".join(cli(command, "--help").stdout.split())  # as read, not as wrapped

    serve = help_of("serve")
    assert "orchestrator-flows agents" in serve  # the agents must run first
    assert "(default: 8000)" in serve
    assert "(default: 127.0.0.1)" in serve
    for variable in ("REDIS_URL", "REDIS_MODE", "ORCHESTRATOR_CONFIG", "AGENT_URL_<NAME>"):
        assert variable in serve
    assert "(default: 9101)" in help_of("agents")
    assert "env.json" in help_of("invoke")


@pytest.mark.parametrize(("content", "problem"), [
    (None, ": cannot read the event: No such file or directory"),
    ('{"version": "2.0",\n  "body": }', ":2:11: the event is not JSON: Expecting value"),
    ("[1, 2]", ": the event must be a JSON object"),
])
def test_invoke_with_a_missing_or_malformed_event_is_one_line_naming_the_file(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    event = tmp_path / "event.json"
    if content is not None:
        event.write_text(content)
    done = cli("invoke", "get_session", str(event))
    assert done.returncode == 2
    assert done.stderr.strip() == f"orchestrator-flows: {event}{problem}"


def test_agents_on_a_port_in_use_is_one_line_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("agents", "--base-port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"orchestrator-flows: port {port} on 127.0.0.1 is already in use (is it already "
        "running?); stop that server or choose another port")


def test_serve_says_its_store_and_each_agent_and_is_ready(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ORCHESTRATOR_CONFIG")}
    env["AGENT_URL_GREETING"] = f"http://127.0.0.1:{free_port()}/"  # nobody listens there
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator_flows.local.cli", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready = None
        deadline = time.monotonic() + 30
        while ready is None and time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready is not None
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "store": "embedded"}
        live = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        assert live.json() == {"status": "ok"}
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "session store: embedded in-memory" in output
    assert "archive: off (ARCHIVE_TABLE is not set)" in output
    assert f"agent greeting  {env['AGENT_URL_GREETING']}  NOT REACHABLE" in output
