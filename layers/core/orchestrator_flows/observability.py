"""Powertools logger, tracer and metrics, defined once for every Lambda function, and the
engine's observer that feeds them.

Configured by Powertools' own environment (POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE,
POWERTOOLS_LOG_LEVEL, POWERTOOLS_TRACE_DISABLED). What a caller said and what an agent answered
are never logged: only their lengths.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "orchestrator-flows")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "OrchestratorFlows")

# The read-only functions publish no metric but the cold start; that is expected, not a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def tracing_enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() not in ("1", "true")


def _make_tracer() -> Tracer | None:
    """Powertools' Tracer, only where tracing is on: aws-xray-sdk imports botocore, about 170 ms
    of cold start (bench/COLD_START.md) that a function with tracing off should not pay.
    auto_patch off: the spans below are the ones worth having, and patching would import httpx
    into the read-only functions."""
    if not tracing_enabled():
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE, auto_patch=False)


tracer = _make_tracer()


def traced(handler: Any) -> Any:
    """`tracer.capture_lambda_handler` when tracing is on; the handler itself otherwise."""
    if tracer is None:
        return handler
    return tracer.capture_lambda_handler(handler, capture_response=False)


def _count(name: str, value: float, unit: MetricUnit, **dimensions: str) -> None:
    """A metric with its own dimensions (per agent, per code), flushed at once as one EMF blob."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE,
                       default_dimensions={"service": SERVICE}) as metric:
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension)


class PowertoolsObserver:
    def span(self, name: str, **annotations: str) -> AbstractAsyncContextManager[None]:
        return self._span(name, annotations)

    @asynccontextmanager
    async def _span(self, name: str, annotations: dict[str, str]) -> AsyncIterator[None]:
        if tracer is None:
            yield
            return
        async with tracer.provider.in_subsegment_async(f"## {name}") as subsegment:
            for key, value in annotations.items():
                subsegment.put_annotation(key=key, value=value)
            yield

    def turn_routed(self, call_identify_id: str, intent: str, stage_id: int, agent: str) -> None:
        # Every later line of this invocation carries the call, the intent and the stage.
        logger.append_keys(call_identify_id=call_identify_id, intent=intent, stage=stage_id,
                           agent=agent)

    def agent_answered(self, agent: str, latency_ms: float, error_code: str | None) -> None:
        _count("AgentLatency", latency_ms, MetricUnit.Milliseconds, agent=agent)
        if error_code is not None:
            _count("AgentErrors", 1, MetricUnit.Count, agent=agent, kind=error_code)
            # The same count on the service dimension alone: what the stack's alarm watches
            # (an alarm cannot sum over every agent and kind).
            metrics.add_metric(name="AgentErrors", unit=MetricUnit.Count, value=1)
            logger.warning("agent failed", extra={"error_code": error_code})

    def turn_done(
        self, status: str, advanced: bool, completed: bool, latency_ms: float,
        input_length: int, reply_length: int,
    ) -> None:
        metrics.add_metric(name="StepLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
        if advanced:
            metrics.add_metric(name="StageAdvanced", unit=MetricUnit.Count, value=1)
        if completed:
            metrics.add_metric(name="CallsCompleted", unit=MetricUnit.Count, value=1)
        logger.info("turn handled", extra={
            "status": status, "advanced": advanced, "completed": completed,
            "latency_ms": round(latency_ms, 2), "input_length": input_length,
            "reply_length": reply_length,
        })

    def turn_refused(self, code: str) -> None:
        _count("StepsRejected", 1, MetricUnit.Count, code=code)
        logger.info("turn refused", extra={"error_code": code})
