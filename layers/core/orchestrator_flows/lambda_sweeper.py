"""The sweeper's Lambda handler: run by a schedule (EventBridge, every few minutes), it archives
the calls that are due (`archive/sweeper.py`), as many as it can before its own deadline, and
publishes what it did as metrics the stack alarms on:

- ArchivedCalls, CallsGone (due, but no longer in Redis: nothing to archive);
- ArchiveFailures (the archive could not take a call: it stays in Redis, kept alive, and due);
- ArchiveKeptAlive (calls whose TTL was renewed because they could not be archived yet);
- ArchiveLagSeconds (how long the oldest call still due has waited: the alarm on a sweeper that
  falls behind, or does not run).

The Redis pool and the boto3 client live across invocations, on one event loop per execution
environment (as the HTTP functions' Mangum loop does).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools.metrics import MetricUnit

from orchestrator_flows import snapshot
from orchestrator_flows.archive.sweeper import Sweeper, SweepReport
from orchestrator_flows.errors import SettingsError
from orchestrator_flows.lambda_telemetry import PowertoolsObserver, Telemetry
from orchestrator_flows.runtime import Runtime, tune_collector
from orchestrator_flows.settings import Settings

SweepHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
# Stop taking new calls this long before the function's timeout: the calls in hand finish.
SAFETY_SECONDS = 20.0
# At most this many calls a run, unless the event's `detail.max_calls` says fewer.
MAX_CALLS = 2000


def max_calls_of(event: Any) -> int | str:
    """How many calls this run may archive, or why the event is refused."""
    if not isinstance(event, dict):
        return "the event is not a JSON object"
    detail = event.get("detail") or {}
    if not isinstance(detail, dict):
        return "the event's detail is not an object"
    asked = detail.get("max_calls", MAX_CALLS)
    if isinstance(asked, bool) or not isinstance(asked, int) or not 1 <= asked <= MAX_CALLS:
        return f"detail.max_calls must be a whole number from 1 to {MAX_CALLS}"
    return asked


def build_sweeper_handler() -> SweepHandler:
    settings = Settings.from_env(deployed=True)
    if settings.archive_table is None:
        raise SettingsError("ARCHIVE_TABLE must be set: the sweeper archives calls into it")
    telemetry = Telemetry.create(service=settings.service_name,
                                 namespace=settings.metrics_namespace, tracing=False,
                                 daemon_address=settings.xray_daemon_address)
    runtime = Runtime.build(settings, observer=PowertoolsObserver(telemetry), route_turns=False)
    index = runtime.store.archive_index
    assert index is not None  # an archive table gives an index
    loop = asyncio.new_event_loop()
    snapshot.register(runtime, loop)  # SnapStart: its retry jitter and Redis connections
    sweepers: list[Sweeper] = []  # one per execution environment, made on first use
    logger, metrics = telemetry.logger, telemetry.metrics
    tune_collector()

    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        max_calls = max_calls_of(event)
        if isinstance(max_calls, str):
            logger.warning("refused event", extra={"problem": max_calls})
            return {"refused": max_calls}
        if not sweepers:  # the archive is opened here, not at init: boto3 loads on first use
            archive = runtime.archives.get()
            assert archive is not None
            sweepers.append(Sweeper(store=runtime.store, index=index, archive=archive))
        sweeper = sweepers[0]
        until = sweeper.clock() + context.get_remaining_time_in_millis() / 1000 - SAFETY_SECONDS
        report = loop.run_until_complete(sweeper.run(max_calls, until=until))
        publish(metrics, report)
        logger.info("swept", extra=dataclasses.asdict(report))
        return dataclasses.asdict(report)

    return cast(SweepHandler, handler)


def publish(metrics: Any, report: SweepReport) -> None:
    for name, value in (("ArchivedCalls", report.archived), ("CallsGone", report.gone),
                        ("ArchiveFailures", report.failed),
                        ("ArchiveKeptAlive", report.kept_alive)):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.add_metric(name="ArchiveLagSeconds", unit=MetricUnit.Seconds,
                       value=report.lag_seconds)

