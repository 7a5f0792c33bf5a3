"""Alarms that reach someone: rates over several periods, every limit watched, a topic
CloudWatch may publish to, and no stack outside dev whose alarms reach no one."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk import Environment

from infra.config import ConfigError, StackConfig
from infra.functions import FUNCTIONS
from tests.infra.conftest import AGENTS, PROD, Synth, Synthesized


def alarms(stack: Synthesized) -> dict[str, dict[str, Any]]:
    """Each alarm's properties by its name in monitoring.py (the logical id less its scope and
    hash; CDK drops the '-')."""
    return {re.sub(r"^Monitoring|[0-9A-F]{8}$", "", name): alarm["Properties"]
            for name, alarm in stack.resources("AWS::CloudWatch::Alarm").items()}


def bare(name: str) -> str:
    """A construct id as CDK writes it into a logical id: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", name)


def expression(alarm: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """A metric-math alarm's expression, and its inputs by id."""
    (math,) = [m for m in alarm["Metrics"] if "Expression" in m]
    inputs = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert math["ReturnData"] is not False
    return math["Expression"], inputs


def test_every_limit_has_an_alarm(default_stack: Synthesized) -> None:
    names = set(alarms(default_stack))
    per_function = {f"Throttles{bare(spec.name)}" for spec in FUNCTIONS}
    # the sweeper runs to its timeout on purpose when calls pile up: ArchiveLag watches it
    per_function |= {f"Duration{bare(spec.name)}" for spec in FUNCTIONS
                     if spec.name != "sweeper"}
    per_function |= {f"ErrorRate{bare(spec.name)}" for spec in FUNCTIONS
                     if spec.name != "sweeper"}
    assert names == {"Api5xxRate", "ApiLatencyP99", "AgentErrorRate", "SweeperErrors",
                     "CacheProcessingUnits", "CacheMemory", "CacheThrottled", "ArchiveFailures",
                     "ArchiveLag", "CanaryServerErrors", "CanaryCrashes"} | per_function
    # dev reserves no concurrency for orchestrate: nothing to be near
    assert "ConcurrencyNearLimit" not in names


@pytest.mark.parametrize(("name", "errors", "total", "namespace"), [
    ("Api5xxRate", "5xx", "Count", "AWS/ApiGateway"),
    ("AgentErrorRate", "AgentErrors", "AgentCalls", "OrchestratorFlows/dev"),
    ("ErrorRateorchestrate", "Errors", "Invocations", "AWS/Lambda"),
])
def test_error_alarms_are_rates_over_several_minutes_with_enough_traffic(
        default_stack: Synthesized, name: str, errors: str, total: str, namespace: str) -> None:
    alarm = alarms(default_stack)[name]
    math, inputs = expression(alarm)
    assert math == "IF(total >= 20, 100 * errors / total, 0)"
    assert inputs["errors"]["Metric"]["MetricName"] == errors
    assert inputs["total"]["Metric"]["MetricName"] == total
    for stat in inputs.values():
        assert stat["Metric"]["Namespace"] == namespace
        assert (stat["Period"], stat["Stat"]) == (60, "Sum")
    # 3 of 5 minutes: one bad minute does not page; a canary's five minutes can see it
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (5, 3)
    assert alarm["Threshold"] == (10 if name == "AgentErrorRate" else 5)


def test_each_function_alarms_near_its_timeout(default_stack: Synthesized) -> None:
    found = alarms(default_stack)
    timeouts = {name: props["Properties"]["Timeout"]
                for name, props in default_stack.resources("AWS::Lambda::Function").items()}
    assert "Durationsweeper" not in found
    for spec in FUNCTIONS[:-1]:
        alarm = found[f"Duration{bare(spec.name)}"]
        assert alarm["MetricName"] == "Duration"
        assert alarm["ExtendedStatistic"] == "p99"
        assert alarm["Threshold"] == timeouts[spec.logical_id] * 1000 * 0.8, spec.name


def test_the_cache_alarms_on_throttled_commands_and_near_its_limits(
        default_stack: Synthesized) -> None:
    found = alarms(default_stack)
    assert found["CacheThrottled"]["MetricName"] == "ThrottledCmds"
    assert found["CacheThrottled"]["Threshold"] == 1
    assert found["CacheMemory"]["Threshold"] == 5 * 1024**3 * 0.8
    assert found["CacheProcessingUnits"]["Threshold"] == 5000 * 60 * 0.8
    for name in ("CacheThrottled", "CacheMemory", "CacheProcessingUnits"):
        assert found[name]["Namespace"] == "AWS/ElastiCache"


def test_the_archive_alarms_when_the_sweeper_lags_or_does_not_run(
        default_stack: Synthesized) -> None:
    found = alarms(default_stack)
    # half the time between falling due and expiring; no figure at all: it does not run
    assert found["ArchiveLag"]["Threshold"] == (3600 - 2700) // 2
    assert found["ArchiveLag"]["TreatMissingData"] == "breaching"
    assert found["ArchiveFailures"]["EvaluationPeriods"] == 2
    assert found["SweeperErrors"]["Dimensions"] == [{"Name": "FunctionName",
                                                     "Value": {"Ref": "SweeperFunction"}}]


def test_dev_alarms_may_go_without_a_target(default_stack: Synthesized) -> None:
    assert not [a for a in alarms(default_stack).values() if a.get("AlarmActions")]
    assert not default_stack.resources("AWS::SNS::Topic")


@pytest.mark.parametrize("stage", ["prod", "staging"])
def test_outside_dev_a_stack_whose_alarms_reach_no_one_is_refused(stage: str) -> None:
    with pytest.raises(ConfigError, match=f"stage {stage} has alarms that would reach no one"):
        StackConfig.from_mapping({**AGENTS, "stage": stage, "owner": "ivr"})
    StackConfig.from_mapping({**AGENTS, "stage": stage, "owner": "ivr",
                              "alarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:pager"})


def test_cloudwatch_may_publish_to_the_tls_only_alarm_topic(full_stack: Synthesized) -> None:
    (topic,) = full_stack.resources("AWS::SNS::Topic")
    (subscription,) = full_stack.resources("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Endpoint"] == "oncall@example.com"
    (policy,) = full_stack.resources("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # The policy replaces SNS's default one: without this Allow, no alarm could publish.
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Action"] == "sns:Publish"
    assert allow["Resource"] == {"Ref": topic}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":alarm:*" in json.dumps(allow["Condition"]["ArnLike"]["aws:SourceArn"])
    for alarm in alarms(full_stack).values():
        assert alarm["AlarmActions"] == [{"Ref": topic}]


def test_an_existing_topic_is_notified_by_every_alarm(prod_stack: Synthesized) -> None:
    assert not prod_stack.resources("AWS::SNS::Topic")  # nothing of its own to build
    for alarm in alarms(prod_stack).values():
        assert alarm["AlarmActions"] == ["arn:aws:sns:eu-west-1:123456789012:pager"]


def test_production_alarms_near_orchestrate_s_reserved_concurrency(
        prod_stack: Synthesized) -> None:
    alarm = alarms(prod_stack)["ConcurrencyNearLimit"]
    reserved = prod_stack.resources("AWS::Lambda::Function")["OrchestrateFunction"][
        "Properties"]["ReservedConcurrentExecutions"]
    assert alarm["MetricName"] == "ConcurrentExecutions"
    assert alarm["Threshold"] == reserved * 0.8


def test_the_canary_alarms_watch_the_version_being_deployed_alone(
        default_stack: Synthesized) -> None:
    found = alarms(default_stack)
    (alias_id, alias), = [(name, a) for name, a in
                          default_stack.resources("AWS::Lambda::Alias").items()
                          if a["Properties"]["FunctionName"] == {"Ref": "OrchestrateFunction"}]
    version = alias["Properties"]["FunctionVersion"]  # the version the alias moves to
    crashes = found["CanaryCrashes"]
    assert (crashes["Namespace"], crashes["MetricName"], crashes["Period"]) == (
        "AWS/Lambda", "Errors", 60)
    dimensions = {d["Name"]: d["Value"] for d in crashes["Dimensions"]}
    assert dimensions["ExecutedVersion"] == version
    assert dimensions["FunctionName"] == {"Ref": "OrchestrateFunction"}
    math, inputs = expression(found["CanaryServerErrors"])
    assert math == "IF(total >= 5, 100 * errors / total, 0)"
    errors = inputs["errors"]["Metric"]
    assert (errors["Namespace"], errors["MetricName"]) == ("OrchestratorFlows/dev", "ServerErrors")
    assert {d["Name"]: d["Value"] for d in errors["Dimensions"]} == {
        "service": "orchestrator-flows", "function": {"Ref": "OrchestrateFunction"},
        "version": version}
    total = {d["Name"]: d["Value"] for d in inputs["total"]["Metric"]["Dimensions"]}
    assert (inputs["total"]["Metric"]["MetricName"], total["ExecutedVersion"]) == (
        "Invocations", version)
    # updated to the new version before the alias moves to it
    depends = default_stack.document["Resources"][alias_id]["DependsOn"]
    assert {name for name in default_stack.resources("AWS::CloudWatch::Alarm")
            if name.startswith("MonitoringCanary")} <= set(depends)


def test_an_existing_topic_in_another_region_is_refused(synth: Synth) -> None:
    env = Environment(account="123456789012", region="eu-west-1")
    with pytest.raises(ConfigError, match=r"alarmTopicArn is in us-east-1: .* own region only"):
        synth({**PROD, "alarmTopicArn": "arn:aws:sns:us-east-1:123456789012:pager"}, env=env)
    synth(PROD, env=env)  # the fixtures' topic is in eu-west-1
