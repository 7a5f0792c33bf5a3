"""The cost of one step, measured in one run on loopback.

    .venv/bin/python bench/step_bench.py            # full run, several minutes; writes RESULTS.md
    .venv/bin/python bench/step_bench.py --quick    # a smoke run of ~1 min; writes nothing

A private redis-server, the agents (the fast stub of `stub_agent.py`, about 0.1 ms of CPU a
request, and an a2a-sdk agent, whose own work is several ms), the orchestrator and two floor apps
(FastAPI + Redis GET + one agent hop over httpx, or over aiohttp + Redis SET) each run in their
own process. The servers measured share one core (`sched_setaffinity`), the load generator,
Redis and the agents the other. Each server's CPU per step is read from the kernel
(`/proc/<pid>/task/*/schedstat`), Redis' from `INFO cpu`, and ratios are paired within a repeat.
Every step is a real turn: an intent unknown to the flow, which the fallback agent answers and
which never advances the stage, so one call can take 1000 steps.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
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
from dataclasses import dataclass
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


# The servers measured run on one core; the load generator, Redis and the agents on the other.
SERVER_CORE, OTHER_CORE = {1}, {0}


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time of every thread of the process so far, from the scheduler (ns)."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9


@contextmanager
def server(*args: str, core: set[int] = SERVER_CORE) -> Iterator[Server]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_servers.py"), args[0],
                             str(port), *args[1:]], cwd=ROOT)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(proc.pid, core)
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
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, concurrency: int, steps_per_user: int, tag: str,
               keyed: bool = False) -> dict[str, float]:
    """`concurrency` callers, each on its own call id, each sending turns back to back (with an
    Idempotency-Key each when `keyed`). The load is sent with aiohttp, the cheapest client at
    hand, so that the load generator is not what limits a fast server."""
    import aiohttp

    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as client:

        async def caller(user: int) -> None:
            call = f"{tag}-{user}"
            for n in range(steps_per_user):
                started = time.perf_counter()
                headers = {"Idempotency-Key": f"{call}-{n}"} if keyed else {}
                async with client.post("/orchestrate", json=turn(call, n),
                                       headers=headers) as response:
                    text = await response.read()
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status == 200, text

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


OWN, HTTPX, AIOHTTP = "ours (a2a/transport.py)", "httpx's own transport", "httpx-aiohttp"


async def agent_hop(agent_url: str, calls: int) -> dict[str, dict[str, float]]:
    """One A2A call through the A2A client over each transport (same httpx API above them),
    interleaved in blocks: p50 and the client's CPU per call."""
    from httpx_aiohttp import AiohttpTransport

    from orchestrator_flows.a2a import A2AClient, AgentRequest
    from orchestrator_flows.flow import Agent

    agent = Agent("fallback", agent_url, "1.0")
    clients = {OWN: A2AClient(timeout_seconds=15),
               HTTPX: A2AClient(timeout_seconds=15, transport=httpx.AsyncHTTPTransport()),
               AIOHTTP: A2AClient(timeout_seconds=15, transport=AiohttpTransport())}
    times: dict[str, list[float]] = {name: [] for name in clients}
    cpu: dict[str, float] = dict.fromkeys(clients, 0.0)
    for block in range(10):
        for name, client in clients.items():
            started_cpu = time.process_time()
            for n in range(calls // 10):
                request = AgentRequest(agent, f"hop {block}.{n}", {}, "ctx-hop")
                started = time.perf_counter()
                await client.send(request)
                times[name].append((time.perf_counter() - started) * 1000)
            if block:  # the first block opens connections and reads the card
                cpu[name] += time.process_time() - started_cpu
    for client in clients.values():
        await client.aclose()
    measured = (calls // 10) * 9
    return {name: {"p50": statistics.median(t), "cpu_us": cpu[name] / measured * 1e6}
            for name, t in times.items()}


def redis_cpu(raw: redis.Redis) -> float:
    info: dict[str, Any] = raw.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_commands(raw: redis.Redis) -> int:
    """Commands Redis ran so far, the bench's own INFO and CONFIG left out."""
    return sum(v for k, v in commandstats(raw).items() if k not in ("info", "config|resetstat"))


async def measured(target: Server, raw: redis.Redis, concurrency: int, per_user: int,
                   tag: str) -> dict[str, float]:
    """One load on `target`, with what it cost the server and Redis per step."""
    await load(target.url, concurrency, 5, f"W{tag}")  # warm connections
    cpu, r_cpu, r_commands = target.cpu_seconds(), redis_cpu(raw), redis_commands(raw)
    result = await load(target.url, concurrency, per_user, tag)
    steps = concurrency * per_user
    result["cpu_us"] = (target.cpu_seconds() - cpu) / steps * 1e6
    result["redis_cpu_us"] = (redis_cpu(raw) - r_cpu) / steps * 1e6
    result["redis_commands"] = (redis_commands(raw) - r_commands) / steps
    return result


Repeat = dict[str, dict[int, dict[str, float]]]  # target -> concurrency -> figures


async def compare(targets: dict[str, Server], raw: redis.Redis, repeats: int,
                  steps: int) -> list[Repeat]:
    """Each repeat runs every target at concurrency 1, 8 and 32, interleaved, so that drift on a
    shared machine hits them alike; ratios are taken within a repeat."""
    results: list[Repeat] = []
    for r in range(repeats):
        repeat: Repeat = {name: {} for name in targets}
        for concurrency in (1, 8, 32):
            per_user = max(5, steps // concurrency)
            for name, target in targets.items():
                repeat[name][concurrency] = await measured(
                    target, raw, concurrency, per_user, f"{name[:5]}{concurrency}-{r}")
        results.append(repeat)
    return results


async def hardening_cost(core: Server, hardened: Server, repeats: int,
                         steps: int) -> dict[str, float]:
    """p50 at concurrency 1 and the server's CPU per step: the core step (no key, breaker off)
    against the hardened one (an Idempotency-Key on every turn, breaker on), interleaved."""
    runs: dict[str, list[float]] = {"core": [], "hardened": []}
    cpu: dict[str, list[float]] = {"core": [], "hardened": []}
    for r in range(repeats * 2):
        for name, target in (("core", core), ("hardened", hardened)):
            keyed = name == "hardened"
            await load(target.url, 1, 5, f"WH{name}{r}", keyed=keyed)
            started = target.cpu_seconds()
            result = await load(target.url, 1, steps, f"H{name}{r}", keyed=keyed)
            cpu[name].append((target.cpu_seconds() - started) / steps * 1e6)
            runs[name].append(result["p50"])
    return {**{name: statistics.median(values) for name, values in runs.items()},
            **{f"{name}_cpu_us": statistics.median(values) for name, values in cpu.items()}}


def breaker_off_flow(workdir: Path) -> Path:
    """The default flow with every agent's circuit breaker turned off: the core step."""
    text = (ROOT / "layers" / "core" / "orchestrator_flows" / "default_flow.yaml").read_text()
    text = re.sub(r'\{url: ("[^"]+")\}', r"{url: \1, circuit_breaker: {failures: 0}}", text)
    path = workdir / "breaker_off.yaml"
    path.write_text(text)
    return path


ORCH, FLOOR, FLOOR_AIOHTTP = "orchestrator", "floor (httpx hop)", "floor (aiohttp hop)"


def floors_section(agent: str, repeats: list[Repeat]) -> list[str]:
    def each(target: str, concurrency: int, key: str, fmt: str) -> str:
        return " / ".join(format(r[target][concurrency][key], fmt) for r in repeats)

    lines = [f"### Against the {agent} agent", "",
             "| target | step p50 ms at c=1 | server CPU µs/step at c=1 | steps/s at c=8 "
             "| steps/s at c=32 | Redis commands/step | Redis CPU µs/step |",
             "|---|---|---|---|---|---|---|"]
    for target in repeats[0]:
        lines.append(f"| {target} | {each(target, 1, 'p50', '.2f')} | "
                     f"{each(target, 1, 'cpu_us', ',.0f')} | "
                     f"{each(target, 8, 'steps_per_s', ',.0f')} | "
                     f"{each(target, 32, 'steps_per_s', ',.0f')} | "
                     f"{statistics.median(r[target][1]['redis_commands'] for r in repeats):.1f} | "
                     f"{each(target, 1, 'redis_cpu_us', ',.0f')} |")

    def ratio(a: str, b: str, concurrency: int, key: str) -> str:
        return " / ".join(f"{r[a][concurrency][key] / r[b][concurrency][key]:.2f}×"
                          for r in repeats)

    lines += ["", "Paired within each repeat (target in brackets):", "",
              f"- step p50 at c=1, orchestrator / httpx floor: {ratio(ORCH, FLOOR, 1, 'p50')}"
              " (≤ 1.3×)",
              f"- server CPU per step at c=1, orchestrator / httpx floor: "
              f"{ratio(ORCH, FLOOR, 1, 'cpu_us')} (≤ 1.3×)",
              f"- Redis CPU per step at c=1, orchestrator / httpx floor: "
              f"{ratio(ORCH, FLOOR, 1, 'redis_cpu_us')} (≤ 2×)",
              f"- steps/s at c=8, orchestrator / aiohttp floor: "
              f"{ratio(ORCH, FLOOR_AIOHTTP, 8, 'steps_per_s')} (≥ 0.8×)",
              f"- steps/s at c=32, orchestrator / aiohttp floor: "
              f"{ratio(ORCH, FLOOR_AIOHTTP, 32, 'steps_per_s')} (≥ 0.8×)",
              "- server CPU per step at c=8 (µs), orchestrator / httpx floor / aiohttp floor: "
              + " / ".join(f"{r[ORCH][8]['cpu_us']:,.0f}·{r[FLOOR][8]['cpu_us']:,.0f}·"
                           f"{r[FLOOR_AIOHTTP][8]['cpu_us']:,.0f}" for r in repeats), ""]
    return lines


def report(floors: dict[str, list[Repeat]], long: dict[str, Any],
           prof: list[tuple[str, float]], hop: dict[str, dict[str, float]],
           hard: dict[str, float],
           args: argparse.Namespace) -> str:
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
    lines += ["", "## The orchestrator against the floors", "",
              "A floor is FastAPI with the same request model, one Redis GET, one agent hop and "
              "one Redis SET. Each figure is one repeat's, repeats separated by `/`; the servers "
              "measured share one core. Against the stub agent the figures are the "
              "orchestrator's own cost; against the a2a-sdk agent, the agent's work is in them.",
              ""]
    for agent, repeats in floors.items():
        lines += floors_section(agent, repeats)
    lines += ["## What idempotency and the breaker cost (stub agent)", "",
              f"p50 at concurrency 1, {args.steps} steps per run, medians of {args.repeats * 2} "
              "interleaved runs:", "",
              f"- core step (no Idempotency-Key, breaker off): {hard['core']:.2f} ms",
              f"- with an Idempotency-Key on every turn and the breaker on: "
              f"{hard['hardened']:.2f} ms",
              f"- change: {(hard['hardened'] / hard['core'] - 1) * 100:+.1f} % (target ≤ +5 %)",
              f"- server CPU per step, the steadier figure on a shared machine: "
              f"{hard['core_cpu_us']:,.0f} µs core, {hard['hardened_cpu_us']:,.0f} µs hardened, "
              f"{(hard['hardened_cpu_us'] / hard['core_cpu_us'] - 1) * 100:+.1f} %",
              "",
              f"## Step {args.long} against step 1 (stub agent)", "",
              f"- p50 of steps 1–50: {long['p50_first']:.2f} ms; of the last 50: "
              f"{long['p50_last']:.2f} ms; ratio {long['p50_last'] / long['p50_first']:.2f}× "
              "(target ≤ 1.2×)"]
    sizes = long["sizes"]
    for n, size in sorted(sizes.items()):
        lines.append(f"- stored after {n} steps (state, trail, keyed answers): {size} bytes "
                     f"({size / n:.0f} bytes/step)")
    lines += ["", "## Where the time of a step goes", "",
              f"Self CPU time by package over {args.profile_steps} steps against the stub agent, "
              "cProfile, app in process "
              "behind httpx's ASGI transport (so the test client's httpx is in the httpx share), "
              "Redis and the agent over loopback; idle time in epoll left out.", "",
              "| part | share |", "|---|---|"]
    lines += [f"| {name} | {share:.1f} % |" for name, share in prof]
    lines += ["", "## The agent hop over each transport", "",
              f"One A2A call through the A2A client, {args.steps} calls each, interleaved in "
              "blocks, the stub agent; the client's CPU per call from `process_time`:", "",
              "| transport | p50 ms | client CPU µs/call |", "|---|---|---|"]
    lines += [f"| {name} | {row['p50']:.2f} | {row['cpu_us']:,.0f} |"
              for name, row in hop.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.repeats, args.steps, args.long, args.profile_steps = (
        (1, 40, 100, 100) if args.quick else (3, 400, 1000, 500))
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, OTHER_CORE)  # the load generator
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    redis_server = start_standalone(workdir)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        assert redis_server.proc is not None
        os.sched_setaffinity(redis_server.proc.pid, OTHER_CORE)
    raw = redis.Redis.from_url(redis_server.url)
    floors: dict[str, list[Repeat]] = {}
    try:
        with server("stub", core=OTHER_CORE) as stub, server("agent", core=OTHER_CORE) as sdk:
            for name, agent in (("stub", stub), ("a2a-sdk", sdk)):
                with server("orchestrator", redis_server.url, agent.url + "/") as orch, \
                        server("floor", redis_server.url, agent.url + "/") as floor, \
                        server("floor-aiohttp", redis_server.url, agent.url + "/") as floor_a:
                    floors[name] = asyncio.run(compare(
                        {ORCH: orch, FLOOR: floor, FLOOR_AIOHTTP: floor_a}, raw, args.repeats,
                        args.steps))
                    if name == "stub":
                        long = asyncio.run(long_call(orch.url, raw, args.long))
                        with server("orchestrator", redis_server.url, agent.url + "/",
                                    str(breaker_off_flow(workdir))) as core:
                            hard = asyncio.run(hardening_cost(core, orch, args.repeats,
                                                              args.steps))
            prof = profile_in_process(redis_server.url, stub.url + "/", args.profile_steps)
            hop = asyncio.run(agent_hop(stub.url + "/", args.steps))
    finally:
        raw.close()
        redis_server.stop()
    text = report(floors, long, prof, hop, hard, args)
    print(text)
    if not args.quick:
        (ROOT / "bench" / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
