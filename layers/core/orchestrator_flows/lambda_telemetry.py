"""Powertools logger and metrics for the Lambda functions, and X-Ray spans (`xray.py`, no
X-Ray SDK), built once per function by its entry point from Settings; and the engine's
observer that feeds them. What a caller said and what an agent answered are never logged:
only their lengths.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

from orchestrator_flows.observer import NO_SPAN, unmet_auth_message
from orchestrator_flows.xray import XRaySpans


@dataclass(frozen=True)
class Telemetry:
    service: str
    namespace: str
    logger: Logger
    metrics: Metrics
    spans: XRaySpans | None  # None: tracing off

    @classmethod
    def create(cls, *, service: str, namespace: str, tracing: bool,
               daemon_address: str) -> Telemetry:
        """Loggers of one service share their handler and metrics their buffer (Powertools),
        so every function of a process writes one stream."""
        # The read-only functions publish no metric but the cold start: expected, not a warning.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        return cls(service, namespace, Logger(service=service),
                   Metrics(namespace=namespace, service=service),
                   XRaySpans(daemon_address) if tracing else None)

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
        self.logger = telemetry.logger
        self.metrics = telemetry.metrics

    def span(self, name: str, **annotations: str) -> AbstractAsyncContextManager[None]:
        spans = self.telemetry.spans
        span = spans.span(name, annotations) if spans is not None else None
        return span if span is not None else NO_SPAN

    def turn_routed(self, call_identify_id: str, intent: str, stage_id: int, agent: str) -> None:
        # Every later line of this invocation carries the call, the intent and the stage.
        self.logger.append_keys(call_identify_id=call_identify_id, intent=intent, stage=stage_id,
                           agent=agent)

    def agent_answered(self, agent: str, latency_ms: float, error_code: str | None,
                       version: str | None = None) -> None:
        # A versioned agent's figures carry its version: a canary is compared with the rest.
        by = {"agent": agent} if version is None else {"agent": agent, "version": version}
        self.telemetry.count("AgentLatency", latency_ms, MetricUnit.Milliseconds, **by)
        # Every call, on the service dimension: the denominator of the stack's agent error rate.
        self.metrics.add_metric(name="AgentCalls", unit=MetricUnit.Count, value=1)
        if error_code is not None:
            self.telemetry.count("AgentErrors", 1, MetricUnit.Count, **by, kind=error_code)
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

    def agent_auth_unmet(self, agent: str, alternatives: list[dict[str, str]]) -> None:
        self.telemetry.count("AgentAuthUnconfigured", 1, MetricUnit.Count, agent=agent)
        self.logger.warning(unmet_auth_message(agent, alternatives),
                            extra={"agent": agent, "schemes_asked": alternatives})
