"""`orchestrator-flows`: serve the API, run the demo agents, or run a whole demo call."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import socket
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from orchestrator_flows.errors import FlowConfigError
from orchestrator_flows.settings import Settings, SettingsError

logger = logging.getLogger("orchestrator_flows")

DEMO_TURNS: tuple[tuple[str, str], ...] = (
    ("greeting", "Hello, I need some help with my account."),
    ("verify_identity", "My name is Sam Rivera, account ACC-DEMO."),
    ("otp_verify", "The code is 482913."),
    ("weather_report", "By the way, is it raining there?"),
    ("refund_request", "I was charged twice for my last order."),
    ("process_refund", "Yes, please refund the duplicate charge."),
    ("end_call", "That's all, thank you!"),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator-flows", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    agents = commands.add_parser("agents", help="run the ten demo A2A agents")
    agents.add_argument("--host", default="127.0.0.1")
    agents.add_argument("--base-port", type=int, default=9101)
    demo = commands.add_parser("demo", help="run agents and API in-process and drive one call")
    demo.add_argument("--json", action="store_true", help="print the final session only, as JSON")
    invoke = commands.add_parser(
        "invoke", help="invoke one Lambda function's handler with an event, as Lambda would"
    )
    invoke.add_argument("function", help="a folder of functions/, e.g. orchestrate")
    invoke.add_argument("event", type=Path, help="an API Gateway event, e.g. events/…/x.json")
    invoke.add_argument("--env-file", type=Path, help="KEY=VALUE lines added to the environment")
    invoke.add_argument("--functions-dir", type=Path, default=Path("functions"))
    args = parser.parse_args(argv)
    if args.command == "invoke":
        return local_invoke(args.function, args.event, args.env_file, args.functions_dir)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the demo
    try:
        if args.command == "serve":
            return _serve(args.host, args.port)
        if args.command == "agents":
            from orchestrator_flows.demo_agents import serve_agents

            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve_agents(args.host, args.base_port))
            return 0
        return asyncio.run(run_demo(as_json=args.json))
    except (FlowConfigError, SettingsError) as exc:
        print(f"orchestrator-flows: configuration error: {exc}", file=sys.stderr)
        return 2


def _serve(host: str, port: int) -> int:
    import uvicorn

    from orchestrator_flows.api import create_app
    from orchestrator_flows.runtime import Runtime

    # Validate configuration and the flow file before binding the port: a broken file never starts.
    runtime = Runtime.from_settings(Settings.from_env())
    logger.info("flow %s: %d stages, %d agents", runtime.flow.source, len(runtime.flow.stages),
                len(runtime.flow.agents))
    uvicorn.run(create_app(runtime), host=host, port=port, log_level="info")
    return 0


def _free_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.asynccontextmanager
async def serving(make_app: Callable[[str], Any]) -> AsyncIterator[str]:
    """Serve `make_app(base_url)` with uvicorn on a free loopback port in this loop (the app
    learns its own URL first: an agent card names it); yields the base URL."""
    import uvicorn

    sock = _free_socket()
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    server = uvicorn.Server(uvicorn.Config(
        make_app(url), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    ))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()  # a handler that never returns must not hold the shutdown
        sock.close()


async def run_demo(as_json: bool = False, out: Any = None) -> int:
    """Start the ten demo agents and the API in this process, drive one call over HTTP, print
    the transcript and the final session, and shut everything down."""
    import httpx

    from orchestrator_flows.api import create_app
    from orchestrator_flows.demo_agents import AGENT_NAMES, build_agent_app
    from orchestrator_flows.runtime import Runtime

    out = out or sys.stdout
    env = dict(os.environ)
    async with contextlib.AsyncExitStack() as stack:
        for name in AGENT_NAMES:
            env[f"AGENT_URL_{name.upper()}"] = await stack.enter_async_context(
                serving(lambda url, name=name: build_agent_app(name, url))  # type: ignore[misc]
            )
        settings = Settings.from_env(env)
        runtime = Runtime.from_settings(settings)
        stack.push_async_callback(runtime.aclose)
        api_url = await stack.enter_async_context(serving(lambda _: create_app(runtime)))
        call_id = f"DEMO-{uuid.uuid4().hex[:8].upper()}"
        store = "redis" if settings.redis_url else "embedded in-memory"
        if not as_json:
            print(f"Orchestrator Flows demo: call {call_id}, account ACC-DEMO, {store} store,"
                  f" API at {api_url}", file=out)
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
            for number, (intent, text) in enumerate(DEMO_TURNS, start=1):
                turn = {"call_identify_id": call_id, "account_id": "ACC-DEMO", "eci": "ECI-DEMO",
                        "input_message": text, "intent": intent}
                answer = await http.post("/orchestrate", json=turn)
                if answer.status_code != 200:
                    print(f"turn {number} failed: HTTP {answer.status_code} {answer.text}",
                          file=sys.stderr)
                    return 1
                if not as_json:
                    _print_turn(number, turn, answer.json(), runtime, out)
            session = (await http.get(f"/session/{call_id}")).json()
        if as_json:
            print(json.dumps(session, indent=2), file=out)
        else:
            _print_session(session, out)
        return 0 if session["is_complete"] else 1


def _print_turn(
    number: int, turn: dict[str, str], answer: dict[str, Any], runtime: Any, out: Any
) -> None:
    stage = runtime.flow.stage(answer["intent_flow_id"])
    response = answer["response"]
    nxt = "call complete" if answer["is_complete"] else f"next stage {answer['next_flow_id']}"
    print(
        f"\nturn {number}  stage {stage.id} {stage.name:<15} intent {turn['intent']:<16}"
        f" agent {response['agent']:<9} -> {answer['status']} ({nxt})",
        file=out,
    )
    print(f"    caller: {turn['input_message']}", file=out)
    reply = response["text"] or (response["error"] or {}).get("message", "")
    print(textwrap.indent(textwrap.fill(f"agent:  {reply}", 96), "    "), file=out)
    if response["data"]:
        print(f"    data:   {json.dumps(response['data'], sort_keys=True)}", file=out)


def _print_session(session: dict[str, Any], out: Any) -> None:
    print("\nFinal session:", file=out)
    summary = {k: v for k, v in session.items() if k != "steps"}
    print(textwrap.indent(json.dumps(summary, indent=2), "    "), file=out)
    print(f"    steps recorded: {len(session['steps'])}", file=out)
    for step in session["steps"]:
        print(f"      #{step['step_number']} stage {step['intent_flow_id']} {step['intent']:<16}"
              f" {step['agent']:<9} {step['response_status']:<14} {step['timestamp']}", file=out)


@dataclass
class LocalContext:
    """What the Lambda runtime passes as `context`, for one local invocation."""

    function_name: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    timeout_seconds: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:eu-west-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_function(name: str, functions_dir: Path = Path("functions")) -> ModuleType:
    """Import `functions/<name>/app.py` afresh, as a new execution environment would."""
    path = functions_dir / name / "app.py"
    if not path.is_file():
        known = sorted(p.parent.name for p in functions_dir.glob("*/app.py"))
        raise FileNotFoundError(f"no function {name!r} at {path}; known: {known}")
    spec = importlib.util.spec_from_file_location(f"lambda_{name}_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def local_invoke(name: str, event_path: Path, env_file: Path | None, functions_dir: Path) -> int:
    """Load the handler as Lambda would, invoke it once, print what it returned."""
    import traceback

    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", name)
    if env_file is not None:
        os.environ.update(read_env_file(env_file))
    try:
        event = json.loads(event_path.read_text())
        handler = load_function(name, functions_dir).handler
        response = handler(event, LocalContext(function_name=name))
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps(response, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
