"""Whole calls, one turn at a time, through a runtime with scripted agents (the orchestrator
and Redis alone): what a bench measures a step by."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from tests.support.redis_servers import start_standalone
from tests.support.scripted import STAGE_INTENTS, ScriptedAgents, turn


async def whole_calls(settings: Settings, calls: int, tag: str) -> tuple[float, float]:
    """CPU µs per step and p50 ms per step over `calls` whole calls."""
    runtime = Runtime.build(settings, storage=Storage.of(settings), agents=ScriptedAgents())
    latencies: list[float] = []
    try:
        for index in range(5):  # warm: connections, scripts loaded
            for intent in STAGE_INTENTS:
                await runtime.turns.handle_turn(turn(intent, call=f"WARM-{tag}-{index}"))
        started = time.process_time()
        for index in range(calls):
            for intent in STAGE_INTENTS:
                began = time.perf_counter()
                await runtime.turns.handle_turn(turn(intent, call=f"{tag}-{index}"))
                latencies.append((time.perf_counter() - began) * 1000)
        cpu = (time.process_time() - started) / (calls * len(STAGE_INTENTS)) * 1e6
    finally:
        await runtime.aclose()
    return cpu, statistics.median(latencies)




def run_on_private_redis(
    measure: Callable[[str, int, int], Coroutine[Any, Any, list[dict[str, Any]]]],
    calls: int, repeats: int,
) -> tuple[list[dict[str, Any]], int, bool]:
    """A bench's command line (`--quick`: a smoke run of 10 calls, once) and its measurement
    against a private redis-server: the rows, the calls per side, and whether it was quick."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    calls, repeats = (10, 1) if quick else (calls, repeats)
    with tempfile.TemporaryDirectory() as workdir:
        server = start_standalone(Path(workdir))
        try:
            return asyncio.run(measure(server.url, calls, repeats)), calls, quick
        finally:
            server.stop()
