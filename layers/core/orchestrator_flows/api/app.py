"""The FastAPI app: the routes asked for, the body limit and the error mapping, over one
runtime."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import Scope

from orchestrator_flows.api import errors
from orchestrator_flows.api.limits import BodyLimit, UntrustedJsonRoute
from orchestrator_flows.api.routes import ADD_ROUTE, ALL_ROUTES, RouteName
from orchestrator_flows.records import json_schemas
from orchestrator_flows.runtime import Runtime


def create_app(runtime: Runtime, routes: Collection[RouteName] = ALL_ROUTES) -> FastAPI:
    """The API with the given routes: all of them (local server) or a function's own."""
    app = FastAPI(
        title="Orchestrator Flows",
        version="1.0.0",  # the HTTP API contract's version (DESIGN §2), not the package's
        description="Routes each turn of a customer-service call to the A2A agent of its stage.",
    )
    app.state.runtime = runtime
    app.router.route_class = UntrustedJsonRoute
    errors.install(app)
    for name in ALL_ROUTES:  # in the table's order, whatever order they were asked in
        if name in routes:
            ADD_ROUTE[name](app)

    def refused(scope: Scope, code: str) -> None:
        errors.count_refusal(app, scope["path"], code)

    app.add_middleware(BodyLimit, on_refusal=refused)

    def openapi() -> dict[str, Any]:
        # Built on first request of /openapi.json (never in Lambda, where it is not routed),
        # with the records' own schemas as the components the answers refer to.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                json_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
