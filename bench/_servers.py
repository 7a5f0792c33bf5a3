"""Servers the step benchmark runs in their own processes, as production would:

    python bench/_servers.py agent PORT                     # an a2a-sdk agent
    python bench/_servers.py stub PORT                      # the fast stub agent (stub_agent.py)
    python bench/_servers.py orchestrator PORT REDIS_URL AGENT_URL [FLOW_FILE]
    python bench/_servers.py floor PORT REDIS_URL AGENT_URL
    python bench/_servers.py floor-aiohttp PORT REDIS_URL AGENT_URL

A floor app is the least a turn can cost: FastAPI with the same request model, one Redis GET,
one A2A hop over a shared client (httpx's, or aiohttp's), one Redis SET, nothing else.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from orchestrator_flows.api.models import TurnRequest


def floor_app(redis_url: str, agent_url: str, hop: str = "httpx") -> FastAPI:
    app = FastAPI()
    clients: dict[str, Any] = {}

    async def post(rpc: dict[str, Any]) -> Any:
        headers = {"a2a-version": "1.0"}
        if hop == "aiohttp":
            async with clients["http"].post(agent_url, json=rpc, headers=headers) as answer:
                return await answer.json()
        return (await clients["http"].post(agent_url, json=rpc, headers=headers)).json()

    @app.post("/orchestrate")
    async def orchestrate(body: TurnRequest) -> JSONResponse:
        if not clients:
            clients["redis"] = Redis.from_url(redis_url, decode_responses=True)
            if hop == "aiohttp":
                import aiohttp

                clients["http"] = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=15),
                    connector=aiohttp.TCPConnector(limit=100))
            else:
                clients["http"] = httpx.AsyncClient(timeout=15)
        redis: Redis = clients["redis"]
        key = f"floor:{{{body.call_identify_id}}}"
        await redis.get(key)
        # The same A2A message the orchestrator sends: context id and call metadata included.
        rpc = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "SendMessage", "params": {
            "message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()),
                        "contextId": f"ctx-{body.call_identify_id}",
                        "parts": [{"text": body.input_message}],
                        "metadata": {"call_identify_id": body.call_identify_id,
                                     "account_id": body.account_id, "eci": body.eci,
                                     "intent": body.intent, "intent_flow_id": 1,
                                     "flow_label": "GREETING"}}}}
        answer = await post(rpc)
        await redis.set(key, json.dumps({"last": answer["result"]}), ex=3600)
        return JSONResponse({"call_identify_id": body.call_identify_id, "status": "success"})

    return app


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "agent":
        from orchestrator_flows.local.demo_agents import build_agent_app

        app: Any = build_agent_app("fallback", f"http://127.0.0.1:{port}/")
    elif kind == "stub":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import uvloop

        from bench.stub_agent import serve

        uvloop.install()
        asyncio.run(serve(port))
        return
    elif kind == "orchestrator":
        from orchestrator_flows.api import create_app
        from orchestrator_flows.runtime import Runtime
        from orchestrator_flows.settings import Settings

        redis_url, agent_url = argv[2], argv[3]
        urls = {name: agent_url for name in ("greeting", "auth", "refund", "billing", "booking",
                                             "complaint", "account", "balance", "closing",
                                             "fallback")}
        flow_file = Path(argv[4]) if len(argv) > 4 else None
        # A long call (bench/step_bench.py's 1,000 steps) is past the production step cap.
        app = create_app(Runtime.build(Settings(
            redis_url=redis_url, agent_urls=urls, orchestrator_config=flow_file,
            max_steps_per_call=10_000)))
    else:
        app = floor_app(argv[2], argv[3], "aiohttp" if kind == "floor-aiohttp" else "httpx")
    from orchestrator_flows.runtime import tune_collector

    tune_collector()  # as `serve` does; the floors alike, so that they compare fairly
    # As `orchestrator-flows serve` runs: httptools and uvloop, access log off.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
