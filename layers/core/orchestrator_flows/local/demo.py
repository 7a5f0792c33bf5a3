"""`orchestrator-flows demo`: the ten demo agents and the API in one process, one whole call
driven over HTTP, its transcript and final session printed."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import uuid
from typing import Any

from orchestrator_flows.local.serving import serving
from orchestrator_flows.settings import Settings

DEMO_TURNS: tuple[tuple[str, str], ...] = (
    ("greeting", "Hello, I need some help with my account."),
    ("verify_identity", "My name is Sam Rivera, account ACC-DEMO."),
    ("otp_verify", "The code is 482913."),
    ("weather_report", "By the way, is it raining there?"),
    ("refund_request", "I was charged twice for my last order."),
    ("process_refund", "Yes, please refund the duplicate charge."),
    ("end_call", "That's all, thank you!"),
)


async def run_demo(as_json: bool = False, out: Any = None) -> int:
    """Start the ten demo agents and the API in this process, drive one call over HTTP, print
    the transcript and the final session, and shut everything down."""
    import httpx

    from orchestrator_flows.api import create_app
    from orchestrator_flows.local.demo_agents import AGENT_NAMES, build_agent_app
    from orchestrator_flows.runtime import Runtime

    out = out or sys.stdout
    env = dict(os.environ)
    async with contextlib.AsyncExitStack() as stack:
        for name in AGENT_NAMES:
            env[f"AGENT_URL_{name.upper()}"] = await stack.enter_async_context(
                serving(lambda url, name=name: build_agent_app(name, url))  # type: ignore[misc]
            )
        settings = Settings.from_env(env)
        runtime = Runtime.build(settings)
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
    stage = runtime.turns.flow.stage(answer["intent_flow_id"])
    response = answer["response"] or {"agent": "-", "text": "", "error": None, "data": {}}
    handoff = answer.get("handoff")
    nxt = ("call complete" if answer["is_complete"] else
           f"transfer to {handoff['queue']}" if handoff else f"next stage {answer['next_flow_id']}")
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
    if handoff:
        print(textwrap.indent(textwrap.fill(f"handoff: {handoff['summary']}", 96), "    "),
              file=out)


def _print_session(session: dict[str, Any], out: Any) -> None:
    print("\nFinal session:", file=out)
    summary = {k: v for k, v in session.items() if k != "steps"}
    print(textwrap.indent(json.dumps(summary, indent=2), "    "), file=out)
    print(f"    steps recorded: {len(session['steps'])}", file=out)
    for step in session["steps"]:
        print(f"      #{step['step_number']} stage {step['intent_flow_id']} {step['intent']:<16}"
              f" {step['agent'] or '-':<9} {step['response_status']:<14} {step['timestamp']}",
              file=out)
