"""The stack and the app agree on the routes: each function of the stack is a folder of
`functions/` whose handler serves exactly the routes API Gateway sends it."""

from __future__ import annotations

import ast
from pathlib import Path

from fastapi.routing import APIRoute

from infra.functions import FUNCTIONS as STACK_FUNCTIONS
from infra.functions import SWEEPER
from orchestrator_flows.api import FUNCTIONS, ROUTES, create_app
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def served_by(function: str) -> set[tuple[str, str]]:
    runtime = Runtime.build(Settings(), storage=Storage.embedded(),
                            route_turns="orchestrate" in FUNCTIONS[function])
    app = create_app(runtime, routes=FUNCTIONS[function])
    return {(method, route.path) for route in app.routes if isinstance(route, APIRoute)
            for method in route.methods or ()}


def test_the_stack_has_one_function_per_folder_and_per_app_function() -> None:
    folders = {path.parent.name for path in (ROOT / "functions").glob("*/app.py")}
    assert {spec.name for spec in STACK_FUNCTIONS} == set(FUNCTIONS) | {SWEEPER} == folders


def test_api_gateway_sends_each_function_exactly_the_routes_its_app_serves() -> None:
    for spec in STACK_FUNCTIONS:
        if spec.name != SWEEPER:  # scheduled: it serves no route
            assert set(spec.routes) == served_by(spec.name), spec.name


def test_every_route_is_served_by_exactly_one_function() -> None:
    routed = [route for spec in STACK_FUNCTIONS for route in spec.routes]
    assert sorted(routed) == sorted((r.method, r.path) for r in ROUTES.values())


def test_each_handler_builds_the_function_of_its_own_folder() -> None:
    for path in (ROOT / "functions").glob("*/app.py"):
        calls = [node for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith(
                     "build_")]
        if path.parent.name == SWEEPER:
            assert [call.func.id for call in calls] == ["build_sweeper_handler"]  # type: ignore[attr-defined]
            continue
        assert [ast.literal_eval(call.args[0]) for call in calls] == [path.parent.name], path
