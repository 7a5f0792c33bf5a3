"""`orchestrator-flows`: serve the API, run the demo agents, run a whole demo call, or invoke a
Lambda function's handler with an event, locally."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator_flows import __version__
from orchestrator_flows.errors import FlowConfigError, SettingsError
from orchestrator_flows.local.invoke import InvokeError
from orchestrator_flows.local.serving import PortTaken
from orchestrator_flows.settings import AGENT_URL_PREFIX, VARIABLES, Settings

logger = logging.getLogger("orchestrator_flows")
PROG = "orchestrator-flows"

def _variable(field: str, variable: str) -> str:
    info = Settings.model_fields[field]
    default = "" if info.default is None else f" (default: {info.default})"
    return f"  {variable:<31} {info.description}{default}"


ENVIRONMENT = "\n".join([
    "environment (read at start):",
    *(_variable(field, variable) for field, variable in VARIABLES.items()),
    f"  {AGENT_URL_PREFIX + '<NAME>':<31} the URL of the flow's agent <name>, replacing the "
    "flow file's",
])

SERVE = """Serve the HTTP API with uvicorn (httptools and uvloop where installed).

Sessions live in Redis at REDIS_URL or, when it is unset, in an embedded in-memory store that
is lost on exit. Turns go to the agents the flow file names; the default flow's are the demo
agents on 127.0.0.1:9101-9110, so start them first in another terminal:

  orchestrator-flows agents

Local use only: uvicorn bounds idle connections and this server bounds how long a request body
may take, but a deployment in a container must put a proxy in front (an ALB, nginx, Envoy) that
bounds slow headers and connection counts; in AWS the functions sit behind API Gateway."""

AGENTS = """Run the ten demo A2A agents of the default flow (built with a2a-sdk), one per port
from --base-port, where the default flow file looks for them. Ctrl-C stops them."""

DEMO = """Start the demo agents and the API in this process, drive one whole call over HTTP (seven
turns, GREETING to CLOSING), print the transcript and the final session, and stop. Needs nothing
running; uses Redis only if REDIS_URL is set."""

INVOKE = """Invoke one Lambda function's handler with an API Gateway event, as Lambda would: a fresh
import of functions/<function>/app.py, the function's environment, a realistic context. Prints
the handler's response. The same event files work with `sam local invoke` where Docker exists."""


VERIFY = """Recompute an archived call's hash chain from the archive (ARCHIVE_TABLE) and report
the first step whose content, place or hash does not hold. Exit status: 0 the chain holds, 1 it
is broken, 2 the call is not archived or the archive cannot be read."""


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, descriptions kept as written."""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=_Help)
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description,
                                   formatter_class=_Help, epilog=ENVIRONMENT)

    serve = command("serve", "serve the HTTP API with uvicorn", SERVE)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    agents = commands.add_parser("agents", help="run the ten demo A2A agents",
                                 description=AGENTS, formatter_class=_Help)
    agents.add_argument("--host", default="127.0.0.1", help="address to listen on")
    agents.add_argument("--base-port", type=int, default=9101,
                        help="the first agent's port; the others follow")
    demo = command("demo", "run agents and API in-process and drive one whole call", DEMO)
    demo.add_argument("--json", action="store_true", help="print the final session only, as JSON")
    invoke = command("invoke", "invoke a Lambda function's handler with an event", INVOKE)
    invoke.add_argument("function", help="a folder of functions/: orchestrate, get_session, "
                        "get_steps or delete_session")
    invoke.add_argument("event", type=Path, help="an API Gateway event, e.g. "
                        "events/orchestrate/call_01_greeting.json")
    invoke.add_argument("--env-file", type=Path, help="the function's environment: sam's "
                        "env.json (e.g. events/env.json) or KEY=VALUE lines")
    invoke.add_argument("--functions-dir", type=Path, default=Path("functions"),
                        help="where the functions' folders are")
    verify = command("verify", "verify an archived call's hash chain", VERIFY)
    verify.add_argument("call_identify_id", help="the call's id")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the demo
    try:
        if args.command == "invoke":
            from orchestrator_flows.local.invoke import local_invoke

            return local_invoke(args.function, args.event, args.env_file, args.functions_dir)
        if args.command == "serve":
            from orchestrator_flows.local.serving import serve

            return serve(Settings.from_env(), args.host, args.port)
        if args.command == "verify":
            return asyncio.run(_verify(Settings.from_env(), args.call_identify_id))
        if args.command == "agents":
            from orchestrator_flows.local.demo_agents import serve_agents

            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve_agents(args.host, args.base_port))
            return 0
        from orchestrator_flows.local.demo import run_demo

        return asyncio.run(run_demo(as_json=args.json))
    except (FlowConfigError, SettingsError) as exc:
        return _fail(f"configuration error: {exc}")
    except (InvokeError, PortTaken) as exc:
        return _fail(str(exc))


async def _verify(settings: Settings, call_identify_id: str) -> int:
    import boto3

    from orchestrator_flows.archive.store import DynamoArchive, verify_call
    from orchestrator_flows.errors import ArchiveUnavailable

    if settings.archive_table is None:
        return _fail("ARCHIVE_TABLE is not set: there is no archive to verify against")
    archive = DynamoArchive(boto3.client("dynamodb"), settings.archive_table,
                            settings.retention_days)
    try:
        verdict = await verify_call(archive, call_identify_id)
        tombstone = await archive.tombstone(call_identify_id) if verdict is None else None
    except ArchiveUnavailable as exc:
        return _fail(str(exc))
    if tombstone is not None:  # nothing left to verify: say what the erasure kept
        print(tombstone.describe())
        return 0
    if verdict is None:
        return _fail(f"call {call_identify_id} is not in the archive {settings.archive_table}")
    print(verdict.describe())
    return 0 if verdict.ok else 1


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
