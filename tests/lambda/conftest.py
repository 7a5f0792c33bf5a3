"""Lambda fixtures: the environment a deployed function gets, pointing at the private Redis and
the real demo agents; handlers loaded from `functions/` as Lambda loads them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator_flows.local.invoke import LocalContext, load_function

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


@pytest.fixture
def lambda_env(
    redis_url: str, demo_agent_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "POWERTOOLS_SERVICE_NAME": "orchestrator-flows",
        "POWERTOOLS_METRICS_NAMESPACE": "OrchestratorFlows",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "orchestrator-flows-test",
        **{f"AGENT_URL_{name.upper()}": url for name, url in demo_agent_urls.items()},
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    return env


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line the functions write, as Powertools formats it for CloudWatch."""
    from aws_lambda_powertools import Logger

    # Loggers of one service share one logging.Logger and its formatter (Powertools).
    logger = Logger(service="orchestrator-flows")
    lines: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    keep = Keep()
    keep.setFormatter(logger.registered_formatter)
    target = logging.getLogger(logger.name)
    target.addHandler(keep)
    yield lines
    target.removeHandler(keep)


def load_handler(function: str) -> Any:
    return load_function(function, FUNCTIONS).handler


@pytest.fixture
def cold(lambda_env: dict[str, str]) -> Invoke:
    """Every invocation in a new execution environment: the handler module imported afresh."""

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = load_handler(function)(event, LocalContext(function))
        return response

    return invoke


@pytest.fixture
def warm(lambda_env: dict[str, str]) -> Invoke:
    """Every invocation of a function in the same execution environment."""
    handlers: dict[str, Any] = {}

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        if function not in handlers:
            handlers[function] = load_handler(function)
        response: dict[str, Any] = handlers[function](event, LocalContext(function))
        return response

    return invoke
