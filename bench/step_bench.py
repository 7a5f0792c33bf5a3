"""The cost of one step, measured in one run on loopback (issue: core orchestrator, Performance).

    .venv/bin/python bench/step_bench.py            # full run, a few minutes; writes RESULTS.md
    .venv/bin/python bench/step_bench.py --quick    # a smoke run of ~30 s; writes nothing

A private redis-server, one a2a-sdk agent, the orchestrator and a floor app each run in their own
process. Every step is a real turn: an intent unknown to the flow, which the fallback agent
answers and which never advances the stage, so one call can take 1000 steps.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import platform
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.redis_servers import free_port, start_standalone  # noqa: E402


def turn(call: str, n: int) -> dict[str, str]:
    return {"call_identify_id": call, "account_id": "ACC-BENCH", "eci": "ECI-1",
            "input_message": f"step {n}: where is my order?", "intent": "chit_chat"}


@contextmanager
def server(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_servers.py"), args[0],
                             str(port), *args[1:]], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args[0]} server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, concurrency: int, steps_per_user: int, tag: str,
               keyed: bool = False) -> dict[str, float]:
    """`concurrency` callers, each on its own call id, each sending turns back to back (with an
    Idempotency-Key each when `keyed`)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def caller(user: int) -> None:
            call = f"{tag}-{user}"
            for n in range(steps_per_user):
                started = time.perf_counter()
                headers = {"Idempotency-Key": f"{call}-{n}"} if keyed else {}
                response = await client.post("/orchestrate", json=turn(call, n), headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(caller(u) for u in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
            "steps_per_s": len(latencies) / elapsed}


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


async def long_call(url: str, raw: redis.Redis, steps: int) -> dict[str, Any]:
    """One call of `steps` steps: round trips and commands per step at its start and its end,
    latency of the first and last 50 steps, and stored bytes as the call grows."""
    call = "LONG-1"
    latencies: list[float] = []
    windows: dict[str, dict[str, int]] = {}
    sizes: dict[int, int] = {}
    checkpoints = {steps // 10, steps // 2, steps}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for n in range(1, steps + 1):
            if n in (2, steps - 9):
                raw.config_resetstat()
            started = time.perf_counter()
            response = await client.post("/orchestrate", json=turn(call, n),
                                         headers={"Idempotency-Key": f"long-{n}"})
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
            if n in (11, steps):
                windows["first" if n == 11 else "last"] = commandstats(raw)
            if n in checkpoints:
                sizes[n] = sum(int(raw.memory_usage(k) or 0) for k in
                               (f"of:{{{call}}}:state", f"of:{{{call}}}:steps",
                                f"of:{{{call}}}:replies"))
    # The orchestrator sends only scripts (EVALSHA, and SCRIPT LOAD + EVALSHA after a NOSCRIPT);
    # every other command counted ran inside them (tests/integration/test_round_trips.py checks
    # this with MONITOR). The bench's own CONFIG RESETSTAT and MEMORY USAGE are left out.
    top_level = ("evalsha", "eval", "script|load")
    per_step = {}
    for window, stats in windows.items():
        stats = {k: v for k, v in stats.items() if k not in ("config|resetstat", "memory|usage")}
        trips = sum(v for k, v in stats.items() if k in top_level) / 10
        per_step[window] = {"round_trips": trips, "commands": sum(stats.values()) / 10,
                            "detail": {k: v / 10 for k, v in sorted(stats.items())}}
    head, tail = latencies[:50], latencies[-50:]
    return {"per_step": per_step, "p50_first": statistics.median(head),
            "p50_last": statistics.median(tail), "sizes": sizes}


def profile_in_process(redis_url: str, agent_url: str, steps: int) -> list[tuple[str, float]]:
    """Self time of a step by package: the app in this process over ASGI, Redis and the agent
    over loopback."""
    from orchestrator_flows.api import create_app
    from orchestrator_flows.runtime import Runtime
    from orchestrator_flows.settings import Settings

    runtime = Runtime.build(Settings(redis_url=redis_url,
                                             agent_urls={"fallback": agent_url}))
    app = create_app(runtime)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            for n in range(20):
                await client.post("/orchestrate", json=turn("PROF-WARM", n))
            profiler.enable()
            for n in range(steps):
                await client.post("/orchestrate", json=turn("PROF-1", n))
            profiler.disable()
        await runtime.aclose()

    profiler = cProfile.Profile()
    asyncio.run(run())
    stats = pstats.Stats(profiler, stream=io.StringIO())
    buckets: dict[str, float] = {}
    groups = (("httpx/httpcore/h11/anyio (agent hop + test client)", ("httpx", "httpcore", "h11",
                                                                      "anyio")),
              ("redis", ("redis",)), ("pydantic", ("pydantic",)),
              ("fastapi/starlette", ("fastapi", "starlette")), ("json", ("json",)),
              ("asyncio/selectors/ssl (event loop, sockets)", ("asyncio", "selectors", "ssl",
                                                              "socket")),
              ("orchestrator_flows", ("orchestrator_flows",)))
    total = 0.0
    for (file, _, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "poll" in func and "epoll" in func:
            continue  # the loop idling on I/O: time spent waiting, not working
        total += tottime
        name = next((label for label, parts in groups
                     if any(f"/{p}/" in file or file.endswith(f"/{p}.py") for p in parts)),
                    "other (builtins, uuid, logging …)")
        buckets[name] = buckets.get(name, 0.0) + tottime
    return sorted(((k, 100 * v / total) for k, v in buckets.items()), key=lambda kv: -kv[1])


async def agent_hop(agent_url: str, calls: int) -> dict[str, float]:
    """p50 of one A2A call through the A2A client, over httpx's own transport and over the
    httpx-aiohttp transport (same httpx API), interleaved in blocks."""
    from httpx_aiohttp import AiohttpTransport

    from orchestrator_flows.a2a import A2AClient, AgentRequest
    from orchestrator_flows.flow import Agent

    agent = Agent("fallback", agent_url, "1.0")
    clients = {"httpx": A2AClient(timeout_seconds=15),
               "httpx-aiohttp": A2AClient(timeout_seconds=15, transport=AiohttpTransport())}
    times: dict[str, list[float]] = {name: [] for name in clients}
    for block in range(10):
        for name, client in clients.items():
            for n in range(calls // 10):
                request = AgentRequest(agent, f"hop {block}.{n}", {}, "ctx-hop")
                started = time.perf_counter()
                await client.send(request)
                times[name].append((time.perf_counter() - started) * 1000)
    for client in clients.values():
        await client.aclose()
    return {name: statistics.median(t) for name, t in times.items()}


async def compare(orch: str, floor: str, repeats: int, steps: int) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    for concurrency in (1, 8, 32):
        runs: dict[str, list[dict[str, float]]] = {"orchestrator": [], "floor": []}
        per_user = max(5, steps // concurrency)
        for r in range(repeats):  # interleaved: A B A B … so drift hits both alike
            for name, url in (("orchestrator", orch), ("floor", floor)):
                await load(url, concurrency, 5, f"W{name}{concurrency}{r}")  # warm connections
                runs[name].append(await load(url, concurrency, per_user,
                                              f"{name}{concurrency}{r}"))
        results[concurrency] = {
            name: {m: statistics.median(run[m] for run in rs) for m in ("p50", "p99",
                                                                          "steps_per_s")}
            for name, rs in runs.items()}
    return results


async def hardening_cost(core: str, hardened: str, repeats: int, steps: int) -> dict[str, float]:
    """p50 at concurrency 1: the core step (no key, breaker off) against the hardened one (an
    Idempotency-Key on every turn, breaker on), interleaved."""
    runs: dict[str, list[float]] = {"core": [], "hardened": []}
    for r in range(repeats * 2):
        for name, url in (("core", core), ("hardened", hardened)):
            await load(url, 1, 5, f"WH{name}{r}", keyed=name == "hardened")
            result = await load(url, 1, steps, f"H{name}{r}", keyed=name == "hardened")
            runs[name].append(result["p50"])
    return {name: statistics.median(values) for name, values in runs.items()}


def breaker_off_flow(workdir: Path) -> Path:
    """The default flow with every agent's circuit breaker turned off: the core step."""
    text = (ROOT / "layers" / "core" / "orchestrator_flows" / "default_flow.yaml").read_text()
    text = re.sub(r'\{url: ("[^"]+")\}', r"{url: \1, circuit_breaker: {failures: 0}}", text)
    path = workdir / "breaker_off.yaml"
    path.write_text(text)
    return path


def report(cmp: dict[int, dict[str, Any]], long: dict[str, Any], prof: list[tuple[str, float]],
           hop: dict[str, float], hard: dict[str, float], args: argparse.Namespace) -> str:
    lines = [
        "# Step benchmark results", "",
        f"`{' '.join(['.venv/bin/python', 'bench/step_bench.py', *sys.argv[1:]])}` — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
        f"2-core shared machine, loopback; medians of {args.repeats} interleaved repeats.",
        "", "## Redis round trips and commands per step (one call, fallback turns, each with an "
        "Idempotency-Key, breaker on)", "",
        "| window | round trips / step | commands / step (incl. inside Lua) | detail |",
        "|---|---|---|---|"]
    for window, row in long["per_step"].items():
        label = "steps 2–11" if window == "first" else f"steps {args.long - 9}–{args.long}"
        detail = ", ".join(f"{k} {v:g}" for k, v in row["detail"].items())
        lines.append(f"| {label} | {row['round_trips']:g} | {row['commands']:g} | {detail} |")
    lines += ["", "## Latency and throughput against the floor app", "",
              "| concurrency | orchestrator p50 / p99 ms | floor p50 / p99 ms | p50 ratio "
              "| orchestrator steps/s | floor steps/s | throughput ratio |",
              "|---|---|---|---|---|---|---|"]
    for c, row in cmp.items():
        o, f = row["orchestrator"], row["floor"]
        lines.append(f"| {c} | {o['p50']:.2f} / {o['p99']:.2f} | {f['p50']:.2f} / {f['p99']:.2f}"
                     f" | {o['p50'] / f['p50']:.2f}× | {o['steps_per_s']:.0f} | "
                     f"{f['steps_per_s']:.0f} | {o['steps_per_s'] / f['steps_per_s']:.2f}× |")
    lines += ["", "Targets: p50 ratio ≤ 1.3× at concurrency 1; throughput ratio ≥ 0.8× at 8.", "",
              "## What idempotency and the breaker cost", "",
              f"p50 at concurrency 1, {args.steps} steps per run, medians of {args.repeats * 2} "
              "interleaved runs:", "",
              f"- core step (no Idempotency-Key, breaker off): {hard['core']:.2f} ms",
              f"- with an Idempotency-Key on every turn and the breaker on: "
              f"{hard['hardened']:.2f} ms",
              f"- change: {(hard['hardened'] / hard['core'] - 1) * 100:+.1f} % (target ≤ +5 %)",
              "",
              f"## Step {args.long} against step 1", "",
              f"- p50 of steps 1–50: {long['p50_first']:.2f} ms; of the last 50: "
              f"{long['p50_last']:.2f} ms; ratio {long['p50_last'] / long['p50_first']:.2f}× "
              "(target ≤ 1.2×)"]
    sizes = long["sizes"]
    for n, size in sorted(sizes.items()):
        lines.append(f"- stored after {n} steps (state, trail, keyed answers): {size} bytes "
                     f"({size / n:.0f} bytes/step)")
    lines += ["", "## Where the time of a step goes", "",
              f"Self CPU time by package over {args.profile_steps} steps, cProfile, app in process "
              "behind httpx's ASGI transport (so the test client's httpx is in the httpx share), "
              "Redis and the agent over loopback; idle time in epoll left out.", "",
              "| part | share |", "|---|---|"]
    lines += [f"| {name} | {share:.1f} % |" for name, share in prof]
    lines += ["", "## The agent hop: httpx transport against httpx-aiohttp", "",
              f"One A2A call through the A2A client, p50 over {args.steps} calls each, "
              "interleaved in blocks, same agent:", ""]
    lines += [f"- {name}: {ms:.2f} ms" for name, ms in hop.items()]
    lines.append(f"- ratio httpx-aiohttp / httpx: {hop['httpx-aiohttp'] / hop['httpx']:.2f}×")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.repeats, args.steps, args.long, args.profile_steps = (
        (1, 40, 100, 100) if args.quick else (3, 400, 1000, 500))
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    redis_server = start_standalone(workdir)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        with server("agent") as agent, \
                server("orchestrator", redis_server.url, agent + "/") as orch, \
                server("orchestrator", redis_server.url, agent + "/",
                       str(breaker_off_flow(workdir))) as core, \
                server("floor", redis_server.url, agent + "/") as floor:
            long = asyncio.run(long_call(orch, raw, args.long))
            cmp = asyncio.run(compare(orch, floor, args.repeats, args.steps))
            hard = asyncio.run(hardening_cost(core, orch, args.repeats, args.steps))
            prof = profile_in_process(redis_server.url, agent + "/", args.profile_steps)
            hop = asyncio.run(agent_hop(agent + "/", args.steps))
    finally:
        raw.close()
        redis_server.stop()
    text = report(cmp, long, prof, hop, hard, args)
    print(text)
    if not args.quick:
        (ROOT / "bench" / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
