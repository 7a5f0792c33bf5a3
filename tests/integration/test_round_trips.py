"""A step costs two round trips to Redis, claim included (DESIGN §5): watched with MONITOR on a
private redis-server, which tells commands a client sent from those a Lua script ran."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis

from orchestrator_flows.engine import Orchestrator
from orchestrator_flows.errors import RequestRefused
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.scripted import ScriptedAgents, turn


async def sent_by_clients(
    redis_url: str, orchestrator: Orchestrator, intents: list[str], call: str,
    idempotency_key: str | None = None,
) -> list[dict[str, Any]]:
    """Every command clients sent while the turns ran (commands inside scripts left out)."""
    seen: list[dict[str, Any]] = []
    watcher = Redis.from_url(redis_url, decode_responses=True)
    async with watcher.monitor() as monitor:
        ready = asyncio.Event()

        async def listen() -> None:
            await watcher.ping()
            ready.set()
            async for command in monitor.listen():
                seen.append(command)

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(ready.wait(), 5)
        await asyncio.sleep(0.1)
        for intent in intents:
            with contextlib.suppress(RequestRefused):
                await orchestrator.handle_turn(turn(intent, call=call), idempotency_key)
        await asyncio.sleep(0.3)
        listener.cancel()
    await watcher.aclose()
    handshake = ("HELLO", "CLIENT", "PING")  # opening a connection, not part of a step
    return [c for c in seen
            if c.get("client_type") != "lua" and not c["command"].startswith(handshake)]


async def test_a_step_costs_two_round_trips(redis_url: str) -> None:
    runtime = Runtime.build(Settings(redis_url=redis_url), agents=ScriptedAgents())
    orchestrator = runtime.turns
    await orchestrator.handle_turn(turn("greeting", call="WARM-1"))  # scripts loaded once
    sent = await sent_by_clients(redis_url, orchestrator,
                                 ["greeting", "verify_identity", "small_talk"], "TRIPS-1")
    await runtime.aclose()
    calls, breakers = split_breaker_commands(sent)
    assert [c["command"].split()[0] for c in calls] == ["EVALSHA"] * 6, sent
    # auth and fallback were not looked at yet by this process: one peek each, alongside a claim.
    assert sorted(c["command"].split()[3] for c in breakers) == [
        'of:breaker:{auth}', 'of:breaker:{fallback}']


def split_breaker_commands(
    sent: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    breakers = [c for c in sent if "of:breaker:" in c["command"]]
    return [c for c in sent if c not in breakers], breakers


async def test_a_warm_agent_s_breaker_costs_no_command(redis_url: str) -> None:
    runtime = Runtime.build(Settings(redis_url=redis_url), agents=ScriptedAgents())
    orchestrator = runtime.turns
    await orchestrator.handle_turn(turn("greeting", call="WARM-4"))
    sent = await sent_by_clients(redis_url, orchestrator, ["small_talk"] * 3 + ["greeting"],
                                 "TRIPS-4")
    await runtime.aclose()
    calls, breakers = split_breaker_commands(sent)
    assert len(calls) == 8
    assert [c["command"].split()[3] for c in breakers] == ['of:breaker:{fallback}']


async def test_a_refused_turn_costs_two_round_trips_and_leaves_no_key(redis_url: str) -> None:
    runtime = Runtime.build(Settings(redis_url=redis_url), agents=ScriptedAgents())
    orchestrator = runtime.turns
    with contextlib.suppress(RequestRefused):  # loads the release script once
        await orchestrator.handle_turn(turn("end_call", call="WARM-2"))
    sent = await sent_by_clients(redis_url, orchestrator, ["end_call"], "TRIPS-2")
    raw = Redis.from_url(redis_url, decode_responses=True)
    left = [k async for k in raw.scan_iter(match="of:{TRIPS-2}*")]
    await raw.aclose()
    await runtime.aclose()
    assert [c["command"].split()[0] for c in sent] == ["EVALSHA"] * 2, sent
    assert left == []


async def test_a_keyed_step_costs_two_round_trips_and_its_replay_one(redis_url: str) -> None:
    runtime = Runtime.build(Settings(redis_url=redis_url), agents=ScriptedAgents())
    orchestrator = runtime.turns
    await orchestrator.handle_turn(turn("greeting", call="WARM-3"), "warm-up")
    sent = await sent_by_clients(redis_url, orchestrator, ["greeting", "greeting"], "TRIPS-3",
                                 idempotency_key="turn-1")
    await runtime.aclose()
    assert [c["command"].split()[0] for c in sent] == ["EVALSHA"] * 3, sent
