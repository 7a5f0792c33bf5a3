"""The Lambda side: one handler per endpoint, each a Mangum adapter over an app of its own
route(s), with Powertools around it.

Mangum 0.22 runs every invocation on one event loop per execution environment
(`get_event_loop().run_until_complete`), so clients created lazily on first use — the Redis pool,
the httpx client — live across warm invocations. `lifespan="off"`: Mangum would otherwise run
the app's startup and shutdown on every invocation. Settings and the flow file are read at init:
a missing REDIS_URL or a broken flow fails the cold start with a clear message, and nothing is
read from disk at request time.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from mangum import Mangum

from orchestrator_flows import snapshot
from orchestrator_flows.api import FUNCTIONS, create_app, error_body
from orchestrator_flows.lambda_telemetry import PowertoolsObserver, Telemetry
from orchestrator_flows.runtime import Runtime, tune_collector
from orchestrator_flows.settings import Settings

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
TRACE_HEADER = "_X_AMZN_TRACE_ID"


def event_problem(event: Any) -> str | None:
    """Why an event is not an API Gateway HTTP API (payload 2.0) request, or None."""
    if not isinstance(event, dict):
        return "the event is not a JSON object"
    if event.get("version") != "2.0":
        return "the event is not an API Gateway HTTP API payload 2.0 (version must be '2.0')"
    http = (event.get("requestContext") or {}).get("http")
    if not isinstance(http, dict) or not isinstance(http.get("method"), str):
        return "the event has no requestContext.http.method"
    if not isinstance(event.get("rawPath"), str):
        return "the event has no rawPath"
    return None


def _refusal(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(error_body(code, message)),
        "isBase64Encoded": False,
    }


def build_handler(function: str) -> LambdaHandler:
    """The handler of one function of `functions/`, serving its routes (`api.FUNCTIONS`)."""
    routes = FUNCTIONS[function]
    settings = Settings.from_env(deployed=True)
    telemetry = Telemetry.create(service=settings.service_name,
                                 namespace=settings.metrics_namespace,
                                 tracing=not settings.trace_disabled,
                                 daemon_address=settings.xray_daemon_address)
    runtime = Runtime.build(settings, observer=PowertoolsObserver(telemetry),
                            route_turns="orchestrate" in routes)
    adapter = Mangum(create_app(runtime, routes=routes), lifespan="off")
    # Mangum has made the loop every invocation runs on: the snapshot hook closes its sockets.
    snapshot.register(runtime, asyncio.get_event_loop())
    logger = telemetry.logger
    tune_collector()  # the init phase's objects serve every invocation: never scanned

    @logger.inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
    )
    @telemetry.metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if telemetry.spans is not None:
            # Lambda sets each invocation's trace header in the environment, before the call.
            telemetry.spans.begin(os.environ.get(TRACE_HEADER))
        problem = event_problem(event)
        if problem is not None:
            logger.warning("refused event", extra={"problem": problem})
            return _refusal(400, "invalid_event", problem)
        response: dict[str, Any] = adapter(event, context)
        if response.get("statusCode", 200) >= 500:
            # This version's own 5xx, beside Lambda's invocations of it: what a canary deploy
            # of the version is judged by (the stack's rollback alarm). Rare: nothing is
            # emitted for an answer below 500.
            telemetry.count("ServerErrors", 1, MetricUnit.Count, function=context.function_name,
                            version=context.function_version)
        return response

    return cast(LambdaHandler, handler)
