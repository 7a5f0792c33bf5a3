"""What an agent's credentials cost a call once they are kept: the A2A client's CPU per call
against the fast stub agent, without credentials and with a bearer token read from a secret
(read once, then a cache hit), interleaved and paired within each repeat.

    .venv/bin/python bench/auth_cost.py          # writes bench/AUTH.md; about a minute
    .venv/bin/python bench/auth_cost.py --quick  # a smoke run; prints only

The secret store here is an in-memory one counting its reads (the first call reads; the rest
must not): what a cache hit costs is the client's own work, which is what is measured. Reading
from Secrets Manager itself (Powertools, boto3, in a worker thread) happens once per
`AGENT_SECRETS_MAX_AGE_SECONDS` and is not on this path.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.instructions import start  # noqa: E402
from orchestrator_flows.a2a import A2AClient, AgentRequest  # noqa: E402
from orchestrator_flows.flow import Agent, BearerAuth, SecretRef  # noqa: E402

CALLS, REPEATS = 2000, 5


class KeptSecrets:
    max_age_seconds = 300.0

    def __init__(self) -> None:
        self.reads = 0

    def read(self, ref: SecretRef, *, fresh: bool) -> str:
        self.reads += 1
        return "bench-token-0123456789"


async def cpu_per_call(client: A2AClient, agent: Agent, calls: int) -> float:
    request = AgentRequest(agent=agent, text="where is my order?",
                           metadata={"call_identify_id": "BENCH"}, context_id="ctx-bench")
    for _ in range(20):
        await client.send(request)
    started = time.process_time()
    for _ in range(calls):
        await client.send(request)
    return (time.process_time() - started) / calls * 1e6


async def measure(url: str, calls: int, repeats: int) -> tuple[list[tuple[float, float]], int]:
    secrets = KeptSecrets()
    client = A2AClient(timeout_seconds=5, secrets=secrets)
    plain = Agent("billing", url, "1.0")
    bearer = Agent("billing", url, "1.0",
                   auth=BearerAuth(SecretRef("secretsmanager", "of/bench-token")))
    pairs = []
    for _ in range(repeats):
        pairs.append((await cpu_per_call(client, plain, calls),
                      await cpu_per_call(client, bearer, calls)))
    await client.aclose()
    return pairs, secrets.reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    calls, repeats = (100, 2) if quick else (CALLS, REPEATS)
    stub, url = start(["stub"])
    try:
        pairs, reads = asyncio.run(measure(url + "/", calls, repeats))
    finally:
        stub.terminate()
    ratios = [bearer / plain for plain, bearer in pairs]
    lines = [
        "# What an agent's credentials cost a call", "",
        f"`.venv/bin/python bench/auth_cost.py` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()}, the stub agent, {calls} calls per run, "
        f"{repeats} interleaved repeats; the client's CPU per call (µs).", "",
        "| repeat | no credentials | bearer token (kept) | ratio |", "|---|---|---|---|"]
    lines += [f"| {n} | {plain:,.0f} | {bearer:,.0f} | {bearer / plain:.2f}× |"
              for n, (plain, bearer) in enumerate(pairs, 1)]
    lines += ["", f"Median ratio: {statistics.median(ratios):.2f}×. The secret was read "
              f"{reads} time(s) in {repeats * (calls + 20)} authenticated calls."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        (ROOT / "bench" / "AUTH.md").write_text(text)


if __name__ == "__main__":
    main()
