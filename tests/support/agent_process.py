"""The ten demo agents in a process of their own, as remote agents are: the tests' orchestrator
then shares neither an event loop nor a GIL with them. Started by the `demo_agent_urls` fixture.

`python -m tests.support.agent_process` binds ten free loopback ports, prints one JSON line
`{"<agent>": "<url>", …}` and serves until stdin closes (the parent ended) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

from orchestrator_flows.cli import serving
from orchestrator_flows.demo_agents import AGENT_NAMES, build_agent_app


async def main() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # The parent holds our stdin: when it goes away, for any reason, so do we.
    loop.add_reader(sys.stdin.fileno(), stop.set)
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name in AGENT_NAMES:
            urls[name] = await stack.enter_async_context(
                serving(lambda url, name=name: build_agent_app(name, url))  # type: ignore[misc]
            )
        print(json.dumps(urls), flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
