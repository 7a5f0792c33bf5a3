"""Powertools logger, metrics and tracer for the Lambda functions, built once per function by
its entry point from Settings, and the engine's observer that feeds them.

Whether there is a tracer at all is decided there: aws-xray-sdk imports botocore, about 170 ms
of cold start (bench/COLD_START.md) that a function with tracing off should not pay.
What a caller said and what an agent answered are never logged: only their lengths.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

from orchestrator_flows.observer import NO_SPAN

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer


@dataclass(frozen=True)
class Telemetry:
    service: str
    namespace: str
    logger: Logger
    metrics: Metrics
    tracer: Tracer | None

    @classmethod
    def create(cls, *, service: str, namespace: str, tracing: bool) -> Telemetry:
        """Loggers of one service share their handler and metrics their buffer (Powertools),
        so every function of a process writes one stream. auto_patch off: the observer's spans
        are the ones worth having, and patching would import httpx into the read-only
        functions."""
        # The read-only functions publish no metric but the cold start: expected, not a warning.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        tracer = None
        if tracing:
            from aws_lambda_powertools import Tracer

            tracer = Tracer(service=service, auto_patch=False)
        return cls(service, namespace, Logger(service=service),
                   Metrics(namespace=namespace, service=service), tracer)

    def traced(self, handler: Any) -> Any:
        """`tracer.capture_lambda_handler` when tracing is on; the handler itself otherwise."""
        if self.tracer is None:
            return handler
        return self.tracer.capture_lambda_handler(handler, capture_response=False)

    def count(self, name: str, value: float, unit: MetricUnit, **dimensions: str) -> None:
        """A metric with its own dimensions (per agent, per code), flushed at once as one EMF
        blob."""
        with single_metric(name=name, unit=unit, value=value, namespace=self.namespace,
                           default_dimensions={"service": self.service}) as metric:
            for key, dimension in dimensions.items():
                metric.add_dimension(name=key, value=dimension)


class PowertoolsObserver:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.tracer = telemetry.tracer
        self.logger = telemetry.logger
        self.metrics = telemetry.metrics

    def span(self, name: str, **annotations: str) -> AbstractAsyncContextManager[None]:
        if self.tracer is None:
            return NO_SPAN
        return self._span(name, annotations)

    @asynccontextmanager
    async def _span(self, name: str, annotations: dict[str, str]) -> AsyncIterator[None]:
        assert self.tracer is not None
        async with self.tracer.provider.in_subsegment_async(f"## {name}") as subsegment:
            for key, value in annotations.items():
                subsegment.put_annotation(key=key, value=value)
            yield

    def turn_routed(self, call_identify_id: str, intent: str, stage_id: int, agent: str) -> None:
        # Every later line of this invocation carries the call, the intent and the stage.
        self.logger.append_keys(call_identify_id=call_identify_id, intent=intent, stage=stage_id,
                           agent=agent)

    def agent_answered(self, agent: str, latency_ms: float, error_code: str | None) -> None:
        self.telemetry.count("AgentLatency", latency_ms, MetricUnit.Milliseconds, agent=agent)
        if error_code is not None:
            self.telemetry.count("AgentErrors", 1, MetricUnit.Count, agent=agent, kind=error_code)
            # The same count on the service dimension alone: what the stack's alarm watches
            # (an alarm cannot sum over every agent and kind).
            self.metrics.add_metric(name="AgentErrors", unit=MetricUnit.Count, value=1)
            self.logger.warning("agent failed", extra={"error_code": error_code})

    def turn_done(
        self, status: str, advanced: bool, completed: bool, latency_ms: float,
        input_length: int, reply_length: int,
    ) -> None:
        self.metrics.add_metric(name="StepLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
        if advanced:
            self.metrics.add_metric(name="StageAdvanced", unit=MetricUnit.Count, value=1)
        if completed:
            self.metrics.add_metric(name="CallsCompleted", unit=MetricUnit.Count, value=1)
        self.logger.info("turn handled", extra={
            "status": status, "advanced": advanced, "completed": completed,
            "latency_ms": round(latency_ms, 2), "input_length": input_length,
            "reply_length": reply_length,
        })

    def turn_refused(self, code: str) -> None:
        self.telemetry.count("StepsRejected", 1, MetricUnit.Count, code=code)
        self.logger.info("turn refused", extra={"error_code": code})
