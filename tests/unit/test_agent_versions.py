"""Agent versions and A/B: a call is given a version by weight on its first turn to the agent,
the same on every instance, and keeps it for the whole call; an open task stays on its version;
a drained version keeps the calls that hold it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrator_flows.errors import FlowConfigError
from orchestrator_flows.flow import Agent, AgentVersion
from orchestrator_flows.flow_file import parse_flow
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from orchestrator_flows.store.memory_backend import MemoryBackend
from tests.support.scripted import ScriptedAgents, completed, input_required, turn

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "layers/core/orchestrator_flows/default_flow.yaml"


def versions_line(weights: dict[str, int]) -> str:
    listed = ", ".join(f'{{name: {name}, url: "https://greeting-{name}.example.com/", '
                       f"weight: {weight}}}" for name, weight in weights.items())
    return f"  greeting: {{versions: [{listed}]}}"


def flow_text(weights: dict[str, int]) -> str:
    lines = DEFAULT.read_text().splitlines()
    return "\n".join(versions_line(weights) if line.startswith("  greeting:") else line
                     for line in lines) + "\n"


def billing(**weights: int) -> Agent:
    return Agent("billing", "https://b.example.com/", versions=tuple(
        AgentVersion(name, f"https://{name}.example.com/", weight)
        for name, weight in weights.items()))


def test_versions_load_with_their_urls_weights_and_pins() -> None:
    text = flow_text({"v1": 90, "v2": 10}).replace(
        'weight: 10}', 'weight: 10, a2a_version: "0.3"}')
    agent = parse_flow(text, "flow.yaml").agents["greeting"]
    assert [(v.name, v.weight, v.a2a_version) for v in agent.versions] == [
        ("v1", 90, None), ("v2", 10, "0.3")]
    v2 = agent.at("v2")
    assert (v2.url, v2.version, v2.a2a_version) == ("https://greeting-v2.example.com/", "v2",
                                                    "0.3")
    assert agent.at("v2") is v2  # built once: the client keys pools and credentials by it


@pytest.mark.parametrize(("line", "problem"), [
    ('  greeting: {url: "https://g/", versions: [{name: a, url: "https://a/", weight: 1}]}',
     "agents.greeting: needs a url or versions, not both"),
    ("  greeting: {a2a_version: '1.0'}", "agents.greeting: needs a url or versions"),
    ('  greeting: {versions: [{name: a, url: "https://a/", weight: 0}]}',
     "no version has a weight above 0"),
    ('  greeting: {versions: [{name: a, url: "https://a/", weight: 1}, '
     '{name: a, url: "https://b/", weight: 1}]}', "duplicate version 'a'"),
    ('  greeting: {versions: [{name: "V 1", url: "https://a/", weight: 1}]}',
     "version name 'V 1' must match"),
    ('  greeting: {versions: [{name: a, url: "ftp://a/", weight: 1}]}',
     "agents.greeting.versions.a.url: 'ftp://a/' is not an http(s) URL"),
    ('  greeting: {versions: [{name: a, url: "https://a/", weight: -1}]}',
     "agents.greeting.versions.0.weight"),
])
def test_broken_versions_are_named_at_their_line(line: str, problem: str) -> None:
    lines = DEFAULT.read_text().splitlines()
    at = next(i for i, text in enumerate(lines) if text.startswith("  greeting:"))
    lines[at] = line
    with pytest.raises(FlowConfigError) as error:
        parse_flow("\n".join(lines), "flow.yaml")
    assert str(error.value).startswith(f"flow.yaml:{at + 1}: "), str(error.value)
    assert problem in str(error.value)


def test_weights_decide_the_share_of_calls_within_a_stated_tolerance() -> None:
    # 10,000 calls at 90/10: v2's share is within 1.5 points of 10 % (five standard deviations
    # of a binomial share, 0.3 points: never by chance).
    agent = billing(v1=90, v2=10)
    shares = Counter(agent.pick(f"CALL-{n:05d}") for n in range(10_000))
    assert abs(shares["v2"] / 10_000 - 0.10) < 0.015
    three = billing(a=50, b=30, c=20)
    split = Counter(three.pick(f"CALL-{n:05d}") for n in range(10_000))
    for name, weight in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(split[name] / 10_000 - weight) < 0.025


def test_a_drained_version_gets_no_new_call() -> None:
    agent = billing(v1=100, v2=0)
    assert {agent.pick(f"CALL-{n}") for n in range(2000)} == {"v1"}


def test_the_same_call_gets_the_same_version_in_another_process() -> None:
    ids = [f"CALL-{n}" for n in range(200)]
    here = [billing(v1=50, v2=50).pick(call) for call in ids]
    probe = ("import json, sys; from orchestrator_flows.flow import Agent, AgentVersion; "
             "agent = Agent('billing', 'https://b/', versions=(AgentVersion('v1', 'https://1/', "
             "50), AgentVersion('v2', 'https://2/', 50))); "
             f"print(json.dumps([agent.pick(c) for c in {ids!r}]))")
    there = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, timeout=60, env={"PYTHONHASHSEED": "12345",
                                                        "PYTHONPATH": str(ROOT / "layers/core")})
    assert json.loads(there.stdout) == here
    assert set(here) == {"v1", "v2"}


def test_each_version_has_its_own_circuit() -> None:
    agent = billing(v1=1, v2=1)
    assert (agent.breaker_key, agent.at("v2").breaker_key) == ("billing", "billing@v2")


def runtime_for(tmp_path: Path, weights: dict[str, int], backend: MemoryBackend,
                agents: ScriptedAgents) -> Runtime:
    path = tmp_path / f"flow-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(flow_text(weights))
    return Runtime.build(Settings(orchestrator_config=path), storage=Storage.embedded(backend),
                         agents=agents)


def call_for(version: str, weights: dict[str, int]) -> str:
    agent = parse_flow(flow_text(weights), "f").agents["greeting"]
    return next(f"CALL-{n}" for n in range(1000) if agent.pick(f"CALL-{n}") == version)


async def steps(runtime: Runtime, call: str) -> list[dict[str, Any]]:
    found = await runtime.store.get(call)
    assert found is not None
    return [json.loads(step) for step in found[1]]


async def test_a_call_keeps_its_version_when_the_weights_change(tmp_path: Path) -> None:
    backend, agents = MemoryBackend(), ScriptedAgents()
    call = call_for("v2", {"v1": 50, "v2": 50})
    agents.then("greeting", input_required())
    first = runtime_for(tmp_path, {"v1": 50, "v2": 50}, backend, agents)
    await first.turns.handle_turn(turn("greeting", call))
    # The weights change (v2 drained) and a new instance serves the next turn.
    again = runtime_for(tmp_path, {"v1": 100, "v2": 0}, backend, agents)
    agents.then("greeting", input_required(task_id="task-2"))
    await again.turns.handle_turn(turn("greeting", call))
    assert [r.agent.url for r in agents.requests] == ["https://greeting-v2.example.com/"] * 2
    assert agents.requests[1].task_id == "task-1"  # the open task continued on its version
    recorded = await steps(again, call)
    assert [s["agent_version"] for s in recorded] == ["v2", "v2"]
    assert [s["a2a_agent_url"] for s in recorded] == ["https://greeting-v2.example.com/"] * 2
    # A new call meanwhile goes to v1 only.
    await again.turns.handle_turn(turn("greeting", "CALL-NEW"))
    assert agents.requests[-1].agent.version == "v1"


async def test_a_version_removed_from_the_flow_is_replaced_and_its_task_not_continued(
    tmp_path: Path,
) -> None:
    backend, agents = MemoryBackend(), ScriptedAgents()
    call = call_for("v2", {"v1": 50, "v2": 50})
    agents.then("greeting", input_required())
    await runtime_for(tmp_path, {"v1": 50, "v2": 50}, backend, agents).turns.handle_turn(
        turn("greeting", call))
    after = runtime_for(tmp_path, {"v1": 1, "v3": 1}, backend, agents)
    agents.then("greeting", completed())
    await after.turns.handle_turn(turn("greeting", call))
    second = agents.requests[1]
    assert second.agent.version in ("v1", "v3")
    assert second.task_id is None  # v2's task cannot go to another version
    assert (await steps(after, call))[-1]["agent_version"] == second.agent.version


async def test_an_unversioned_agent_records_no_version(tmp_path: Path) -> None:
    backend, agents = MemoryBackend(), ScriptedAgents()
    runtime = runtime_for(tmp_path, {"v1": 1}, backend, agents)
    await runtime.turns.handle_turn(turn("greeting"))
    await runtime.turns.handle_turn(turn("verify_identity"))
    assert [s["agent_version"] for s in await steps(runtime, "CALL-1")] == ["v1", None]


async def test_a_call_without_an_open_task_still_keeps_its_version(tmp_path: Path) -> None:
    from orchestrator_flows.errors import AgentFailure, FailureCode

    backend, agents = MemoryBackend(), ScriptedAgents()
    call = call_for("v2", {"v1": 50, "v2": 50})
    agents.then("greeting", AgentFailure(FailureCode.TASK_FAILED, "no"))
    await runtime_for(tmp_path, {"v1": 50, "v2": 50}, backend, agents).turns.handle_turn(
        turn("greeting", call))
    drained = runtime_for(tmp_path, {"v1": 100, "v2": 0}, backend, agents)
    await drained.turns.handle_turn(turn("greeting", call))
    assert [r.agent.version for r in agents.requests] == ["v2", "v2"]
    assert (await drained.store.get(call)) is not None


def test_a_deployed_agents_versions_come_from_agent_versions_variables() -> None:
    versions = [{"name": "v1", "url": "https://b1.example.com/", "weight": 80},
                {"name": "v2", "url": "https://b2.example.com/", "weight": 20}]
    settings = Settings.from_env({"AGENT_VERSIONS_BILLING": json.dumps(versions)})
    billing = settings.load_flow().agents["billing"]
    assert [(v.name, v.url, v.weight) for v in billing.versions] == [
        ("v1", "https://b1.example.com/", 80), ("v2", "https://b2.example.com/", 20)]
    assert billing.at("v2").url == "https://b2.example.com/"


@pytest.mark.parametrize(("value", "problem"), [
    ('[{"name": "v1", "url": "https://b/", "weight": 0}]', "no version has a weight above 0"),
    ('{"v1": 1}', "must be a list of {name, url, weight}"),
    ('[{"name": "v1", "url": "https://b/"}]', "must be a list of {name, url, weight}"),
])
def test_a_broken_agent_versions_variable_is_named(value: str, problem: str) -> None:
    with pytest.raises(FlowConfigError) as error:
        Settings.from_env({"AGENT_VERSIONS_BILLING": value}).load_flow()
    assert str(error.value).startswith("AGENT_VERSIONS_BILLING: ")
    assert problem in str(error.value)
