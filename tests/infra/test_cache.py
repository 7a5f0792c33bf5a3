"""The session cache, locked down: IAM authentication through a user group, the functions'
group alone on 6379 and 6380, snapshots outside dev, a name that lets it be replaced."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Environment

from infra.cache import ACCESS_STRING
from tests.infra.conftest import AGENTS, PROD, Synth, Synthesized


def cache(stack: Synthesized) -> tuple[str, dict[str, Any]]:
    ((name, found),) = stack.resources("AWS::ElastiCache::ServerlessCache").items()
    return name, found["Properties"]


def test_the_cache_is_valkey_serverless_and_admits_only_the_functions_on_6379_and_6380(
        default_stack: Synthesized) -> None:
    _, props = cache(default_stack)
    assert (props["Engine"], props["MajorEngineVersion"]) == ("valkey", "8")
    assert len(props["SubnetIds"]) == 2
    (cache_group,) = [group["Fn::GetAtt"][0] for group in props["SecurityGroupIds"]]
    groups = default_stack.resources("AWS::EC2::SecurityGroup")
    assert "functions only" in groups[cache_group]["Properties"]["GroupDescription"]
    # No egress: CDK's "disallow all" placeholder rule is the only one.
    (egress,) = groups[cache_group]["Properties"]["SecurityGroupEgress"]
    assert egress["CidrIp"] == "255.255.255.255/32"
    assert "SecurityGroupIngress" not in groups[cache_group]["Properties"]
    ingress = [rule["Properties"] for rule in
               default_stack.resources("AWS::EC2::SecurityGroupIngress").values()
               if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [cache_group, "GroupId"]}]
    (function_group,) = [name for name in groups if name != cache_group]
    assert sorted((r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in ingress) == [
        ("tcp", 6379, 6379), ("tcp", 6380, 6380)]
    for rule in ingress:
        assert rule["SourceSecurityGroupId"] == {"Fn::GetAtt": [function_group, "GroupId"]}


def test_the_functions_authenticate_with_iam_as_a_user_of_the_cache_s_group(
        default_stack: Synthesized) -> None:
    _, props = cache(default_stack)
    groups = default_stack.resources("AWS::ElastiCache::UserGroup")
    ((group_name, group),) = groups.items()
    assert props["UserGroupId"] == group["Properties"]["UserGroupId"]
    assert group_name in default_stack.document["Resources"][next(iter(
        default_stack.resources("AWS::ElastiCache::ServerlessCache")))]["DependsOn"]
    users = {user["Properties"]["UserName"]: user["Properties"]
             for user in default_stack.resources("AWS::ElastiCache::User").values()}
    assert set(users) == {"orchestrator-flows-dev", "default"}
    functions_user = users["orchestrator-flows-dev"]
    # IAM authentication: no password anywhere; the user's id is its name (ElastiCache's rule)
    assert functions_user["AuthenticationMode"] == {"Type": "iam"}
    assert functions_user["UserId"] == functions_user["UserName"]
    assert functions_user["AccessString"] == ACCESS_STRING
    assert "Passwords" not in json.dumps(functions_user)
    # The group's default user is switched off; its password is a generated secret's.
    default = users["default"]
    assert default["AccessString"].startswith("off ")
    assert "resolve:secretsmanager" in json.dumps(default["AuthenticationMode"]["Passwords"])
    assert sorted(group["Properties"]["UserIds"]) == sorted(
        [functions_user["UserId"], default["UserId"]])
    for name, function in default_stack.resources("AWS::Lambda::Function").items():
        env = function["Properties"]["Environment"]["Variables"]
        assert env["REDIS_IAM_USER"] == "orchestrator-flows-dev", name
        assert env["REDIS_CACHE_NAME"] == props["ServerlessCacheName"], name


def test_each_function_may_connect_as_that_user_to_that_cache_only(
        default_stack: Synthesized) -> None:
    cache_name, _ = cache(default_stack)
    (user,) = [name for name, user in default_stack.resources("AWS::ElastiCache::User").items()
               if user["Properties"]["UserName"] != "default"]
    roles = {function["Properties"]["Role"]["Fn::GetAtt"][0]
             for function in default_stack.resources("AWS::Lambda::Function").values()}
    granted: dict[str, list[Any]] = {}
    for policy in default_stack.resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Action"] == "elasticache:Connect":
                for role in policy["Properties"]["Roles"]:
                    granted[role["Ref"]] = statement["Resource"]
    assert set(granted) == roles
    for resources in granted.values():
        assert sorted(json.dumps(r) for r in resources) == sorted([
            json.dumps({"Fn::GetAtt": [cache_name, "ARN"]}),
            json.dumps({"Fn::GetAtt": [user, "Arn"]})])


def test_outside_dev_the_cache_is_snapshotted_daily(default_stack: Synthesized,
                                                    prod_stack: Synthesized) -> None:
    _, dev = cache(default_stack)
    assert "DailySnapshotTime" not in dev
    assert "SnapshotRetentionLimit" not in dev
    _, prod = cache(prod_stack)
    assert (prod["DailySnapshotTime"], prod["SnapshotRetentionLimit"]) == ("03:00", 7)


def test_the_cache_s_name_changes_with_what_replaces_it(synth: Synth,
                                                        default_stack: Synthesized) -> None:
    _, dev = cache(default_stack)
    name = dev["ServerlessCacheName"]
    assert name.startswith("of-dev-")
    assert len(name) <= 40
    assert cache(synth({**PROD, "stage": "dev", "profile": "dev"}))[1][
        "ServerlessCacheName"] == name  # same subnets: same name (no replacement)
    # other subnets (a wider VPC's, an existing VPC's): a new cache, under a new name, beside
    # the old one
    other = cache(synth({**PROD, "stage": "dev", "profile": "dev", "isolated": "true"}))[1]
    assert other["ServerlessCacheName"] != name
    existing = cache(synth({**AGENTS, "vpcId": "vpc-0123456789abcdef0"},
                           env=Environment(account="123456789012", region="eu-west-1")))[1]
    assert existing["ServerlessCacheName"] not in (name, other["ServerlessCacheName"])
