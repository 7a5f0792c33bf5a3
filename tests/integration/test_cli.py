"""The command line as a user runs it: the README's demo command end to end, and a broken flow
file stopping `serve` before it binds a port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
        [sys.executable, "-m", "orchestrator_flows.cli", "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert f"{flow}:7: " in done.stderr
    assert "unknown agent 'ghost'" in done.stderr


def test_serve_refuses_bad_settings_naming_the_variable() -> None:
    env = {**os.environ, "SESSION_TTL_SECONDS": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator_flows.cli", "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "SESSION_TTL_SECONDS" in done.stderr
