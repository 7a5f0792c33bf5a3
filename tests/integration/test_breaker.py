"""The circuit breaker per agent: opened by failures counted in a shared window, failing steps
fast while open (no network call), one probe at a time once cooled down; its state shared by
every instance through the store — embedded, a real Redis and a real Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from orchestrator_flows.breaker import BreakerPolicy
from orchestrator_flows.errors import AgentFailure, FailureCode
from orchestrator_flows.flow import RetryPolicy
from orchestrator_flows.records import to_json
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from tests.integration.conftest import BACKENDS, make_storage
from tests.support.agents import Recorder, build_agent_app
from tests.support.scripted import ScriptedAgents, completed, turn

# Opens after 3 failures and stays open for the rest of a test...
QUICK = BreakerPolicy(failures=3, window_seconds=10, cooldown_seconds=60)
# ...or cools down soon, yet not so soon that a slow turn on a loaded machine outlives it: the
# turn right after an opening must still find it open (the cool-down runs on Redis' clock).
COOLS = BreakerPolicy(failures=3, window_seconds=10, cooldown_seconds=1.5)
COOLED = 1.6
Serve = Callable[[Callable[[str], Any]], Any]


def unreachable() -> AgentFailure:
    return AgentFailure(FailureCode.UNREACHABLE, "connection refused")


def instance(storage: Storage, agents: Any, policy: BreakerPolicy = QUICK,
             settings: Settings | None = None) -> Runtime:
    """One orchestrator process over shared storage, with the greeting agent's breaker set."""
    runtime = Runtime.build(settings or Settings(), storage=storage, agents=agents)
    flow = runtime.turns.flow
    greeting = replace(flow.agents["greeting"], breaker=policy, retry=RetryPolicy(attempts=1))
    runtime.turns.flow = replace(flow, agents={**flow.agents, "greeting": greeting})
    return runtime


async def greet(runtime: Runtime, call: str) -> dict[str, Any]:
    answer: dict[str, Any] = to_json(await runtime.turns.handle_turn(turn("greeting", call=call)))
    return answer


def error_code(answer: dict[str, Any]) -> str | None:
    error = answer["response"]["error"]
    return error["code"] if error else None


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest) -> Any:
    made, inspector = await make_storage(request.param, request)
    yield made
    await made.close()
    if inspector.raw is not None:
        await inspector.raw.flushall()  # an open breaker would fail other tests' steps fast
        await inspector.raw.aclose()


async def test_failures_open_the_breaker_and_steps_then_fail_fast_without_a_call(
    storage: Storage,
) -> None:
    agents = ScriptedAgents().then("greeting", *[unreachable()] * 3)
    runtime = instance(storage, agents)
    codes = [error_code(await greet(runtime, f"BRK-{n}")) for n in range(5)]
    assert codes == ["agent_unreachable"] * 3 + ["agent_unavailable"] * 2
    assert len(agents.to("greeting")) == 3


async def test_after_the_cool_down_one_probe_closes_it_again(storage: Storage) -> None:
    agents = ScriptedAgents().then("greeting", *[unreachable()] * 3)
    runtime = instance(storage, agents, COOLS)
    for n in range(3):
        await greet(runtime, f"PROBE-{n}")
    await asyncio.sleep(COOLED)
    probe = await greet(runtime, "PROBE-3")
    after = await greet(runtime, "PROBE-4")
    assert (probe["status"], after["status"]) == ("success", "success")
    assert len(agents.to("greeting")) == 5


async def test_a_failed_probe_opens_it_again(storage: Storage) -> None:
    agents = ScriptedAgents().then("greeting", *[unreachable()] * 4)
    runtime = instance(storage, agents, COOLS)
    for n in range(3):
        await greet(runtime, f"REOPEN-{n}")
    await asyncio.sleep(COOLED)
    probe = await greet(runtime, "REOPEN-3")
    after = await greet(runtime, "REOPEN-4")
    assert (error_code(probe), error_code(after)) == ("agent_unreachable", "agent_unavailable")
    assert len(agents.to("greeting")) == 4


async def test_only_one_probe_at_a_time(storage: Storage) -> None:
    agents = ScriptedAgents().then("greeting", *[unreachable()] * 3, 0.3)  # the probe is slow
    runtime = instance(storage, agents, COOLS)
    for n in range(3):
        await greet(runtime, f"ONE-{n}")
    await asyncio.sleep(COOLED)
    answers = await asyncio.gather(*(greet(runtime, f"ONE-P{n}") for n in range(5)))
    assert sorted(str(error_code(a)) for a in answers) == ["None"] + ["agent_unavailable"] * 4
    assert len(agents.to("greeting")) == 4


async def test_a_busy_agent_failing_now_and_then_stays_closed(storage: Storage) -> None:
    """Failures are weighed against the successes seen with them: 4 failures in 40 calls is
    10 %, under the policy's 50 %, though over its minimum of 3 failures."""
    script = [completed() if n % 10 else unreachable() for n in range(1, 41)]
    agents = ScriptedAgents().then("greeting", *script)
    runtime = instance(storage, agents)
    codes = [error_code(await greet(runtime, f"BUSY-{n}")) for n in range(41)]
    assert codes.count("agent_unreachable") == 4
    assert "agent_unavailable" not in codes
    assert len(agents.to("greeting")) == 41


async def test_answers_the_agent_chose_to_fail_do_not_count(storage: Storage) -> None:
    failed = AgentFailure(FailureCode.TASK_FAILED, "the agent failed the task")
    agents = ScriptedAgents().then("greeting", *[failed] * 5)
    runtime = instance(storage, agents)
    codes = [error_code(await greet(runtime, f"TASK-{n}")) for n in range(6)]
    assert codes == ["agent_task_failed"] * 5 + [None]


async def test_failures_outside_the_window_do_not_add_up(storage: Storage) -> None:
    policy = BreakerPolicy(failures=2, window_seconds=0.2, cooldown_seconds=5)
    agents = ScriptedAgents().then("greeting", *[unreachable()] * 3)
    runtime = instance(storage, agents, policy)
    for n in range(3):
        await greet(runtime, f"WINDOW-{n}")
        await asyncio.sleep(0.3)
    assert len(agents.to("greeting")) == 3  # never opened: each failure had a window of its own


@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_instances_share_the_breaker_through_redis(
    kind: str, request: pytest.FixtureRequest, serve: Serve
) -> None:
    """Instance A's failures against a real a2a-sdk agent (behind a front answering 503) open
    the breaker; instance B, which never failed, then fails fast without calling it."""
    front: dict[str, Recorder] = {}

    def make(url: str) -> Recorder:
        front["f"] = Recorder(build_agent_app("greeting", url), fail_first=1000)
        return front["f"]

    url = await serve(make)
    settings = Settings(agent_urls={"greeting": url})
    shared_a, inspector_a = await make_storage(kind, request)
    shared_b, inspector_b = await make_storage(kind, request)  # same server, its own client
    a = instance(shared_a, None, settings=settings)
    b = instance(shared_b, None, settings=settings)
    try:
        codes_a = [error_code(await greet(a, f"SHARE-A{n}")) for n in range(3)]
        answer_b = await greet(b, "SHARE-B")
    finally:
        for runtime in (a, b):
            await runtime.aclose()
        for raw in (inspector_a.raw, inspector_b.raw):
            if raw is not None:
                await raw.flushall()
                await raw.aclose()
    assert codes_a == ["agent_http_error"] * 3
    assert error_code(answer_b) == "agent_unavailable"
    assert answer_b["response"]["attempts"] == []
    assert len(front["f"].requests) == 3
