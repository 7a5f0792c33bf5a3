"""What waiting turns cost (TURN_WAIT_SECONDS), against a private redis-server, scripted agents:

1. an uncontended step, waiting off (0) and on (5 s), paired within each repeat: the claim and
   commit scripts look at the queue (one LINDEX, one LLEN) and nothing more, so the step keeps
   its two round trips;
2. the hand-over: 10 turns of one call sent at once to two instances, each turn's agent taking
   20 ms; the time from one turn's commit to the next turn's claim is the wall time less the
   agents' 200 ms, over 9 hand-overs (a waiting turn is woken by the commit, over BLPOP).

    .venv/bin/python bench/turn_wait.py          # writes bench/TURN_WAIT.md; about a minute
    .venv/bin/python bench/turn_wait.py --quick  # a smoke run; prints only
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._calls import run_on_private_redis, whole_calls  # noqa: E402
from orchestrator_flows.errors import StepInProgress  # noqa: E402
from orchestrator_flows.runtime import Runtime, Storage  # noqa: E402
from orchestrator_flows.settings import Settings  # noqa: E402
from tests.support.scripted import STAGE_INTENTS, ScriptedAgents, turn  # noqa: E402

CALLS, REPEATS, TURNS, AGENT_SECONDS = 200, 5, 10, 0.02


async def hand_over(url: str, tag: str) -> tuple[float, int]:
    """The mean gap (ms) from a turn's commit to the next one's claim, and the 409s."""
    settings = Settings(redis_url=url, turn_wait_seconds=5)
    agents = [ScriptedAgents().then("fallback", *[AGENT_SECONDS] * TURNS) for _ in range(2)]
    runtimes = [Runtime.build(settings, storage=Storage.of(settings), agents=agent)
                for agent in agents]
    try:
        for runtime in runtimes:  # warm
            await runtime.turns.handle_turn(turn("greeting", call=f"WARM-{tag}-{id(runtime)}"))
        began = time.perf_counter()
        results = await asyncio.gather(*(
            runtimes[n % 2].turns.handle_turn(turn("small_talk", call=f"HAND-{tag}",
                                                   text=f"turn {n}"))
            for n in range(TURNS)), return_exceptions=True)
        wall = time.perf_counter() - began
    finally:
        for runtime in runtimes:
            await runtime.aclose()
    refused = sum(isinstance(r, StepInProgress) for r in results)
    assert not [r for r in results if isinstance(r, BaseException)
                and not isinstance(r, StepInProgress)], results
    return (wall - TURNS * AGENT_SECONDS) / (TURNS - 1) * 1000, refused


async def measure(url: str, calls: int, repeats: int) -> list[dict[str, float]]:
    off, on = Settings(redis_url=url, turn_wait_seconds=0), Settings(redis_url=url)
    rows = []
    for repeat in range(repeats):
        row: dict[str, float] = {}
        for name, settings in (("off", off), ("on", on)) if repeat % 2 == 0 else (
                ("on", on), ("off", off)):
            row[f"{name}_cpu"], row[f"{name}_p50"] = await whole_calls(
                settings, calls, f"R{repeat}{name}")
        row["gap_ms"], row["refused"] = await hand_over(url, f"R{repeat}")
        rows.append(row)
        print(f"repeat {repeat + 1}: CPU/step off {row['off_cpu']:.0f} µs, on "
              f"{row['on_cpu']:.0f} µs ({row['on_cpu'] / row['off_cpu']:.3f}x); p50 off "
              f"{row['off_p50']:.3f} ms, on {row['on_p50']:.3f} ms; hand-over "
              f"{row['gap_ms']:.2f} ms, {row['refused']:.0f} refused", flush=True)
    return rows


def report(rows: list[dict[str, float]], calls: int) -> str:
    cpu = statistics.median(r["on_cpu"] / r["off_cpu"] for r in rows)
    p50 = statistics.median(r["on_p50"] / r["off_p50"] for r in rows)
    gap = statistics.median(r["gap_ms"] for r in rows)
    return "\n".join([
        "# Turns that wait their turn: what waiting costs",
        "",
        f"`.venv/bin/python bench/turn_wait.py`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, Python {platform.python_version()}: {calls} whole calls "
        f"({calls * len(STAGE_INTENTS)} steps) per side and repeat, one turn at a time, "
        "scripted agents, a private redis-server on loopback, waiting off and on interleaved; "
        f"then {TURNS} turns of one call sent at once to two instances, each agent call "
        f"{AGENT_SECONDS * 1000:.0f} ms.",
        "",
        "| repeat | CPU µs/step off | on | ratio | p50 ms off | on | ratio | hand-over ms | "
        "refused |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {i + 1} | {r['off_cpu']:.0f} | {r['on_cpu']:.0f} | "
          f"{r['on_cpu'] / r['off_cpu']:.3f} | {r['off_p50']:.3f} | {r['on_p50']:.3f} | "
          f"{r['on_p50'] / r['off_p50']:.3f} | {r['gap_ms']:.2f} | {r['refused']:.0f} |"
          for i, r in enumerate(rows)),
        "",
        f"Median of the paired ratios for an uncontended step: CPU **{cpu:.3f}x**, p50 "
        f"**{p50:.3f}x** (the claim script reads the queue's head, the commit its length; "
        "no round trip is added). Median hand-over from one turn's commit to the next turn's "
        f"claim: **{gap:.2f} ms** — the commit wakes the waiting turns (one BLPOP returns) "
        "and the first in line claims: one round trip and a script, where a poll every "
        "second (Rasa's ticket lock) would hand over in 500 ms on average. Scripted agents: "
        "the orchestrator alone, so the ratio is the largest it can be; this machine is "
        "shared and single repeats vary by about +-15 %.",
        "",
    ])


def main() -> None:
    rows, calls, quick = run_on_private_redis(measure, CALLS, REPEATS)
    if not quick:
        (ROOT / "bench" / "TURN_WAIT.md").write_text(report(rows, calls))

if __name__ == "__main__":
    main()
