"""The ten demo agents in a process of their own, as remote agents are: the tests' orchestrator
then shares neither an event loop nor a GIL with them. Started by `agent_process()`.

`python -m tests.support.agent_process [--fail-rate R --seed S]` binds ten free loopback ports,
prints one JSON line `{"<agent>": "<url>", …}` and serves until stdin closes (the parent ended)
or SIGTERM. With a fail rate, a seeded share of the JSON-RPC requests answer HTTP 500 (a failure
the client does not retry) instead of reaching the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator_flows.local.demo_agents import AGENT_NAMES, build_agent_app
from orchestrator_flows.local.serving import serving


@dataclass
class SometimesFailing:
    """In front of a real agent: a seeded share of its JSON-RPC requests answer HTTP 500."""

    app: ASGIApp
    dice: random.Random
    rate: float

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and \
                self.dice.random() < self.rate:
            await Response(status_code=500)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def main(fail_rate: float, seed: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # The parent holds our stdin: when it goes away, for any reason, so do we.
    loop.add_reader(sys.stdin.fileno(), stop.set)
    dice = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name in AGENT_NAMES:
            urls[name] = await stack.enter_async_context(serving(
                lambda url, name=name: SometimesFailing(  # type: ignore[misc]
                    build_agent_app(name, url), dice, fail_rate)))
        print(json.dumps(urls), flush=True)
        await stop.wait()


@contextlib.contextmanager
def agent_process(fail_rate: float = 0.0, seed: int = 0) -> Iterator[dict[str, str]]:
    """Run the ten demo agents in a child process; yields their URLs by name."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.agent_process", "--fail-rate", str(fail_rate),
         "--seed", str(seed)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"the demo agents' process exited with {child.wait(10)}")
        yield json.loads(line)
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.fail_rate, args.seed))
