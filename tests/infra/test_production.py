"""Stage profiles, safe deploys and cold starts, read off the template: what `prod` turns on,
what dev keeps cheap, how orchestrate's versions reach traffic and roll back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Annotations, Match

from infra.config import ConfigError, StackConfig
from infra.functions import FUNCTIONS
from tests.infra.conftest import AGENTS, PROD, Synth, Synthesized


def function(stack: Synthesized, logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = stack.resources("AWS::Lambda::Function")[logical_id]["Properties"]
    return props


def live_alias(stack: Synthesized, logical_id: str) -> dict[str, Any]:
    (alias,) = [alias for alias in stack.resources("AWS::Lambda::Alias").values()
                if alias["Properties"]["FunctionName"] == {"Ref": logical_id}]
    assert alias["Properties"]["Name"] == "live"
    return alias


def test_prod_keeps_its_logs_and_data_and_cannot_be_deleted_by_accident(
        prod_stack: Synthesized, default_stack: Synthesized) -> None:
    assert prod_stack.stack.termination_protection is True
    assert default_stack.stack.termination_protection is False
    for group in prod_stack.resources("AWS::Logs::LogGroup").values():
        assert (group["DeletionPolicy"], group["UpdateReplacePolicy"]) == ("Retain", "Retain")
    for group in default_stack.resources("AWS::Logs::LogGroup").values():
        assert group["DeletionPolicy"] == "Delete"
    (table,) = prod_stack.resources("AWS::DynamoDB::GlobalTable").values()
    assert table["DeletionPolicy"] == "Retain"


def test_prod_builds_a_nat_gateway_per_az_and_locks_the_default_security_group(
        prod_stack: Synthesized, default_stack: Synthesized) -> None:
    assert len(prod_stack.resources("AWS::EC2::NatGateway")) == 2
    assert len(default_stack.resources("AWS::EC2::NatGateway")) == 1
    (restrict,) = prod_stack.resources("Custom::VpcRestrictDefaultSG").values()
    assert restrict["Properties"]["DefaultSecurityGroupId"] == {
        "Fn::GetAtt": [next(iter(prod_stack.resources("AWS::EC2::VPC"))),
                       "DefaultSecurityGroup"]}
    assert not default_stack.resources("Custom::VpcRestrictDefaultSG")  # dev stays cheap
    assert len(prod_stack.document["Outputs"]["AgentCallerIps"]["Value"]["Fn::Join"][1]) == 2


def test_prod_sizes_orchestrate_s_reserved_concurrency_within_the_account(
        prod_stack: Synthesized, default_stack: Synthesized) -> None:
    # 100 turns/s × a 25 s timeout could hold 2,500 executions: more than a default account's
    # 1,000. Half of it is reserved, leaving room for the rest of the account.
    assert function(prod_stack, "OrchestrateFunction")["ReservedConcurrentExecutions"] == 500
    Annotations.from_stack(prod_stack.stack).has_warning(
        "/OrchestratorFlows-prod/Functions/orchestrate", Match.string_like_regexp(
            r"reserved concurrency \(500\) is below .* = 2500\)"))
    assert "ReservedConcurrentExecutions" not in function(default_stack, "OrchestrateFunction")


def test_a_throttle_that_fits_sizes_the_reservation_from_rate_and_timeout(synth: Synth) -> None:
    stack = synth({**PROD, "throttleRateLimit": "10", "throttleBurstLimit": "20"})
    assert function(stack, "OrchestrateFunction")["ReservedConcurrentExecutions"] == 10 * 25
    assert not Annotations.from_stack(stack.stack).find_warning("*", Match.any_value())


def test_every_resource_is_tagged_with_service_stage_and_owner(prod_stack: Synthesized) -> None:
    tags = {tag["Key"]: tag["Value"]
            for tag in function(prod_stack, "OrchestrateFunction")["Tags"]}
    assert tags == {"service": "orchestrator-flows", "stage": "prod", "profile": "prod",
                    "owner": "ivr-team@example.com"}
    (table,) = prod_stack.resources("AWS::DynamoDB::GlobalTable").values()
    assert {"Key": "owner", "Value": "ivr-team@example.com"} in table["Properties"]["Replicas"][
        0]["Tags"]


@pytest.mark.parametrize(("values", "message"), [
    ({"stage": "prod", "alarmEmail": "a@example.com"}, "set owner"),
    ({"profile": "qa"}, "context profile: "),
    ({"snapStart": "true", "provisionedConcurrency": "5"}, "alternatives"),
    ({"deployment": "CANARY_50_PERCENT"}, "deployment must be one of"),
    ({"reservedConcurrency": "950"}, "leaves less than Lambda's 100 unreserved"),
    ({"reservedConcurrency": "5", "provisionedConcurrency": "10"},
     "provisionedConcurrency=10 is above orchestrate's reserved concurrency"),
])
def test_profile_options_that_cannot_work_are_refused(values: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StackConfig.from_mapping({**AGENTS, **values})


def test_the_profile_follows_the_stage_unless_given() -> None:
    assert StackConfig.from_mapping(PROD).production
    assert not StackConfig.from_mapping(AGENTS).production
    staging = StackConfig.from_mapping({**PROD, "stage": "staging", "profile": "prod"})
    assert (staging.production, staging.nat_gateways, staging.deployment) == (
        True, 2, "CANARY_10_PERCENT_5_MINUTES")
    cheap = StackConfig.from_mapping({**PROD, "profile": "dev"})
    assert (cheap.production, cheap.nat_gateways, cheap.reserved_concurrency) == (False, 1, None)
    assert cheap.outside_dev  # a prod stage's archive is kept whatever the profile
    # and a dev stage built as prod is held to prod's rules
    with pytest.raises(ConfigError, match="reach no one"):
        StackConfig.from_mapping({**AGENTS, "profile": "prod", "owner": "ivr"})


def test_every_function_is_called_through_its_live_alias_on_a_published_version(
        default_stack: Synthesized) -> None:
    versions = default_stack.resources("AWS::Lambda::Version")
    # kept when the next is published: a rollback by hand has a version to go back to
    assert {v["DeletionPolicy"] for v in versions.values()} == {"Retain"}
    for spec in FUNCTIONS:
        alias = live_alias(default_stack, spec.logical_id)["Properties"]
        version = versions[alias["FunctionVersion"]["Fn::GetAtt"][0]]["Properties"]
        assert version["FunctionName"] == {"Ref": spec.logical_id}
    permissions = default_stack.resources("AWS::Lambda::Permission").values()
    invoked = {json.dumps(p["Properties"]["FunctionName"]) for p in permissions
               if p["Properties"]["Principal"] == "apigateway.amazonaws.com"}
    assert invoked
    assert all('"Ref"' in name and "live" in name for name in invoked)


@pytest.mark.parametrize(("fixture", "config"), [
    ("default_stack", "CodeDeployDefault.LambdaAllAtOnce"),
    ("prod_stack", "CodeDeployDefault.LambdaCanary10Percent5Minutes"),
])
def test_orchestrate_deploys_through_codedeploy_and_rolls_back_on_its_alarms(
        request: pytest.FixtureRequest, fixture: str, config: str) -> None:
    stack: Synthesized = request.getfixturevalue(fixture)
    (group,) = stack.resources("AWS::CodeDeploy::DeploymentGroup").values()
    props = group["Properties"]
    assert props["DeploymentConfigName"] == config
    assert set(props["AutoRollbackConfiguration"]["Events"]) == {
        "DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_REQUEST", "DEPLOYMENT_STOP_ON_ALARM"}
    assert props["AlarmConfiguration"]["Enabled"] is True
    watched = json.dumps(props["AlarmConfiguration"]["Alarms"])
    for name in ("CanaryServerErrors", "CanaryCrashes", "Api5xxRate", "ErrorRateorchestrate"):
        assert name in watched
    assert "AgentErrorRate" not in watched  # an agent's outage is not the version's fault
    alias = live_alias(stack, "OrchestrateFunction")
    assert "CodeDeployLambdaAliasUpdate" in alias["UpdatePolicy"]
    for spec in FUNCTIONS[1:]:  # the read functions move at once
        assert "UpdatePolicy" not in live_alias(stack, spec.logical_id)
    rollback = json.dumps(stack.document["Outputs"]["Rollback"]["Value"])
    assert "aws deploy stop-deployment --auto-rollback-enabled" in rollback
    assert "aws lambda update-alias --function-name " in rollback


def test_snapstart_is_on_for_every_function_by_default(default_stack: Synthesized) -> None:
    for spec in FUNCTIONS:
        assert function(default_stack, spec.logical_id)["SnapStart"] == {
            "ApplyOn": "PublishedVersions"}, spec.name


def test_provisioned_concurrency_replaces_snapstart_on_orchestrate_s_alias(
        synth: Synth) -> None:
    stack = synth({**AGENTS, "provisionedConcurrency": "4"})
    alias = live_alias(stack, "OrchestrateFunction")["Properties"]
    assert alias["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 4}
    for spec in FUNCTIONS:
        assert "SnapStart" not in function(stack, spec.logical_id), spec.name
        if spec.name != "orchestrate":
            assert "ProvisionedConcurrencyConfig" not in live_alias(
                stack, spec.logical_id)["Properties"]
