"""The synthesized template: what each function, the API, the cache and the alarms get."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Environment

from infra.config import flow_agents
from infra.functions import FUNCTIONS
from tests.infra.conftest import AGENTS, Synth, Synthesized

READ_FUNCTIONS = ("GetSessionFunction", "GetStepsFunction", "DeleteSessionFunction",
                  "ListCallsFunction")
ALL_FUNCTIONS = ("OrchestrateFunction", *READ_FUNCTIONS, "EraseAccountFunction",
                 "SweeperFunction")


def functions(stack: Synthesized) -> dict[str, dict[str, Any]]:
    # (in production, CDK's own handler that empties the VPC's default security group beside)
    found = {name: function for name, function in stack.resources("AWS::Lambda::Function").items()
             if not name.startswith("CustomVpcRestrictDefaultSG")}
    assert set(found) == set(ALL_FUNCTIONS)
    return {name: resource["Properties"] for name, resource in found.items()}


def test_every_function_runs_python_3_13_on_arm64_with_the_layer_in_the_vpc(
        default_stack: Synthesized) -> None:
    (layer,) = default_stack.resources("AWS::Lambda::LayerVersion")
    (function_group,) = [name for name, group in
                         default_stack.resources("AWS::EC2::SecurityGroup").items()
                         if group["Properties"]["GroupDescription"]
                         == "Orchestrator Flows functions"]
    for name, props in functions(default_stack).items():
        assert props["Runtime"] == "python3.13", name
        assert props["Architectures"] == ["arm64"], name
        assert props["Handler"] == "app.handler", name
        assert props["Layers"] == [{"Ref": layer}], name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["VpcConfig"]["SecurityGroupIds"] == [
            {"Fn::GetAtt": [function_group, "GroupId"]}], name
        assert len(props["VpcConfig"]["SubnetIds"]) == 2, name


def test_every_function_reaches_the_cache_over_tls_in_cluster_mode(
        default_stack: Synthesized) -> None:
    (cache,) = default_stack.resources("AWS::ElastiCache::ServerlessCache")
    for name, props in functions(default_stack).items():
        env = props["Environment"]["Variables"]
        assert env["REDIS_MODE"] == "cluster", name
        assert env["REDIS_URL"] == {"Fn::Join": ["", [
            "rediss://", {"Fn::GetAtt": [cache, "Endpoint.Address"]}, ":",
            {"Fn::GetAtt": [cache, "Endpoint.Port"]}]]}, name
        assert env["SESSION_TTL_SECONDS"] == "3600"
        assert env["POWERTOOLS_SERVICE_NAME"] == "orchestrator-flows"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "OrchestratorFlows/dev"
        assert env["POWERTOOLS_TRACE_DISABLED"] == "false"


def test_only_orchestrate_is_told_where_the_agents_are(full_stack: Synthesized) -> None:
    props = functions(full_stack)
    env = props["OrchestrateFunction"]["Environment"]["Variables"]
    agents = {key: value for key, value in env.items() if key.startswith("AGENT_URL_")}
    assert set(agents) == {f"AGENT_URL_{name.upper()}" for name in flow_agents()}
    assert agents["AGENT_URL_AUTH"] == "https://auth.example.net/a2a/"
    assert agents["AGENT_URL_REFUND"] == "https://agents.example.com/refund/"
    assert env["AGENT_TIMEOUT_SECONDS"] == "15"
    assert env["TURN_WAIT_SECONDS"] == "5"
    for name in ALL_FUNCTIONS[1:]:
        assert not [key for key in props[name]["Environment"]["Variables"]
                    if key.startswith("AGENT_")], name


def test_timeouts_and_memory_follow_the_config(full_stack: Synthesized) -> None:
    props = functions(full_stack)
    assert props["OrchestrateFunction"]["Timeout"] == 25  # wait 5 s + agent 15 s + Redis margin
    assert props["OrchestrateFunction"]["MemorySize"] == 512
    assert props["OrchestrateFunction"]["ReservedConcurrentExecutions"] == 50
    for name in READ_FUNCTIONS:
        assert props[name]["Timeout"] == (15 if name == "DeleteSessionFunction" else 5)
        assert props[name]["MemorySize"] == 256
        assert "ReservedConcurrentExecutions" not in props[name]
    assert props["EraseAccountFunction"]["Timeout"] == 29  # inside API Gateway's 30 s
    # The sweeper ends before the next run is due, and runs one at a time.
    assert props["SweeperFunction"]["Timeout"] == 5 * 60 - 30
    assert props["SweeperFunction"]["ReservedConcurrentExecutions"] == 1


def test_function_roles_may_write_logs_traces_and_enis_and_use_the_archive_as_their_work_needs(
        default_stack: Synthesized) -> None:
    roles = default_stack.resources("AWS::IAM::Role")
    function_roles = {props["Role"]["Fn::GetAtt"][0] for props in functions(default_stack).values()}
    assert len(function_roles) == 7
    for role in function_roles:
        managed = roles[role]["Properties"]["ManagedPolicyArns"]
        assert sorted(arn["Fn::Join"][1][-1] for arn in managed) == [
            ":iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            ":iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"]
    for policy in default_stack.resources("AWS::IAM::Policy").values():
        attached = {role["Ref"] for role in policy["Properties"]["Roles"]}
        if not attached & function_roles:
            continue
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        actions = sorted(action for statement in statements
                         for action in ([statement["Action"]]
                                        if isinstance(statement["Action"], str)
                                        else statement["Action"]))
        assert [a for a in actions if not a.startswith("dynamodb:")] == [
            "elasticache:Connect", "xray:PutTelemetryRecords", "xray:PutTraceSegments"]


def archive_access(stack: Synthesized) -> dict[str, tuple[set[str], list[Any]]]:
    """Per function: the DynamoDB actions its role may take, and on what."""
    (table,) = stack.resources("AWS::DynamoDB::GlobalTable")
    role_of = {props["Role"]["Fn::GetAtt"][0]: name for name, props in functions(stack).items()}
    found: dict[str, tuple[set[str], list[Any]]] = {name: (set(), []) for name in role_of.values()}
    for policy in stack.resources("AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                if role["Ref"] in role_of and any(a.startswith("dynamodb:") for a in actions):
                    assert statement["Effect"] == "Allow"
                    resources = statement["Resource"]
                    resources = resources if isinstance(resources, list) else [resources]
                    assert all(table in json.dumps(r) for r in resources)
                    found[role_of[role["Ref"]]][0].update(actions)
                    found[role_of[role["Ref"]]][1].extend(resources)
    return found


def test_only_the_erasure_may_delete_archived_data_and_the_reads_may_only_read(
        default_stack: Synthesized) -> None:
    access = archive_access(default_stack)
    read = {"dynamodb:GetItem", "dynamodb:Query"}
    archive = read | {"dynamodb:PutItem", "dynamodb:ConditionCheckItem"}
    assert {name: actions for name, (actions, _) in access.items()} == {
        "OrchestrateFunction": set(),  # it schedules calls in Redis, never touches the table
        "GetSessionFunction": read, "GetStepsFunction": read,
        "ListCallsFunction": {"dynamodb:Query"},
        "DeleteSessionFunction": archive, "SweeperFunction": archive,
        "EraseAccountFunction": archive | {"dynamodb:UpdateItem", "dynamodb:DeleteItem",
                                           "dynamodb:BatchWriteItem"},
    }
    (index_only,) = access["ListCallsFunction"][1]
    assert json.dumps(index_only).endswith('"/index/GSI1"]]}')
    assert "*" not in json.dumps([resources for _, resources in access.values()])


def test_the_archive_table_is_on_demand_recoverable_encrypted_and_expires_records(
        default_stack: Synthesized) -> None:
    (table,) = default_stack.resources("AWS::DynamoDB::GlobalTable").values()
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert [k["AttributeName"] for k in props["KeySchema"]] == ["PK", "SK"]
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "GSI1"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["GSI1PK", "GSI1SK"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    (replica,) = props["Replicas"]
    assert replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    # dev: the data goes with the stack
    assert replica.get("DeletionProtectionEnabled") is False
    assert table["DeletionPolicy"] == "Delete"
    for name, function in functions(default_stack).items():
        env = function["Environment"]["Variables"]
        assert env["ARCHIVE_TABLE"] == {"Ref": next(iter(
            default_stack.resources("AWS::DynamoDB::GlobalTable")))}, name
        assert (env["RETENTION_DAYS"], env["ARCHIVE_IDLE_SECONDS"]) == ("90", "2700"), name


def test_outside_dev_the_archive_is_retained_and_protected_from_deletion(
        full_stack: Synthesized) -> None:
    (table,) = full_stack.resources("AWS::DynamoDB::GlobalTable").values()
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    (replica,) = table["Properties"]["Replicas"]
    assert replica["DeletionProtectionEnabled"] is True


def test_the_sweeper_runs_on_a_schedule_and_the_functions_reach_dynamodb_inside_the_vpc(
        default_stack: Synthesized, full_stack: Synthesized) -> None:
    (rule,) = default_stack.resources("AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    (target,) = rule["Properties"]["Targets"]
    alias = default_stack.resources("AWS::Lambda::Alias")[target["Arn"]["Ref"]]["Properties"]
    assert (alias["FunctionName"], alias["Name"]) == ({"Ref": "SweeperFunction"}, "live")
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 0}
    for stack in (default_stack, full_stack):  # with a NAT, and isolated
        (endpoint,) = stack.resources("AWS::EC2::VPCEndpoint").values()
        assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
        assert ".dynamodb" in json.dumps(endpoint["Properties"]["ServiceName"])


def test_the_api_routes_eight_routes_to_their_functions_under_iam(
        default_stack: Synthesized) -> None:
    routes = {route["Properties"]["RouteKey"]: route["Properties"]
              for route in default_stack.resources("AWS::ApiGatewayV2::Route").values()}
    assert set(routes) == {f"{method} {path}" for spec in FUNCTIONS for method, path in spec.routes}
    assert len(routes) == 8
    integrations = default_stack.resources("AWS::ApiGatewayV2::Integration")
    aliases = default_stack.resources("AWS::Lambda::Alias")
    for spec in FUNCTIONS:
        for method, path in spec.routes:
            route = routes[f"{method} {path}"]
            assert route["AuthorizationType"] == "AWS_IAM"
            integration = integrations[route["Target"]["Fn::Join"][1][1]["Ref"]]["Properties"]
            alias = aliases[integration["IntegrationUri"]["Ref"]]["Properties"]  # `live`
            assert alias["FunctionName"] == {"Ref": spec.logical_id}
            assert integration["PayloadFormatVersion"] == "2.0"
    (api,) = default_stack.resources("AWS::ApiGatewayV2::Api").values()
    assert "CorsConfiguration" not in api["Properties"]


def test_the_default_stage_throttles_and_logs_access_as_json(default_stack: Synthesized) -> None:
    (stage,) = default_stack.resources("AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "$default"
    assert props["AutoDeploy"] is True
    assert props["DefaultRouteSettings"] == {"ThrottlingRateLimit": 100,
                                             "ThrottlingBurstLimit": 200}
    log_groups = default_stack.resources("AWS::Logs::LogGroup")
    assert props["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0] in log_groups
    line = json.loads(props["AccessLogSettings"]["Format"])
    assert line["requestId"] == "$context.requestId"
    assert line["routeKey"] == "$context.routeKey"
    # a log line leads to its function's log lines (HTTP APIs have no X-Ray trace id)
    assert line["lambdaRequestId"] == "$context.awsEndpointRequestId"
    assert all(value.startswith("$context.") for value in line.values())
    assert line["status"] == "$context.status"


def test_a_jwt_issuer_in_context_replaces_iam_with_a_jwt_authorizer(
        full_stack: Synthesized) -> None:
    (authorizer,) = full_stack.resources("AWS::ApiGatewayV2::Authorizer").values()
    assert authorizer["Properties"]["AuthorizerType"] == "JWT"
    assert authorizer["Properties"]["JwtConfiguration"] == {
        "Issuer": "https://idp.example.com/", "Audience": ["ivr-platform", "chat-platform"]}
    for route in full_stack.resources("AWS::ApiGatewayV2::Route").values():
        if route["Properties"]["RouteKey"].startswith("OPTIONS"):
            continue
        assert route["Properties"]["AuthorizationType"] == "JWT"
    (api,) = full_stack.resources("AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["CorsConfiguration"]["AllowOrigins"] == [
        "https://console.example.com"]


def test_every_log_group_keeps_its_logs_for_the_configured_days(
        default_stack: Synthesized) -> None:
    log_groups = default_stack.resources("AWS::Logs::LogGroup").values()
    assert len(log_groups) == 9  # seven functions, API access, VPC flow logs
    assert {group["Properties"]["RetentionInDays"] for group in log_groups} == {30}
    for props in functions(default_stack).values():
        assert "LoggingConfig" in props


def test_egress_goes_through_one_nat_gateway_by_default(default_stack: Synthesized) -> None:
    assert len(default_stack.resources("AWS::EC2::NatGateway")) == 1
    assert len(default_stack.resources("AWS::EC2::FlowLog")) == 1


def test_the_isolated_option_builds_no_nat_and_no_internet_gateway(
        full_stack: Synthesized) -> None:
    assert not full_stack.resources("AWS::EC2::NatGateway")
    assert not full_stack.resources("AWS::EC2::InternetGateway")
    assert len(full_stack.resources("AWS::EC2::Subnet")) == 2


def test_an_existing_vpc_is_used_not_built(synth: Synth) -> None:
    stack = synth({**AGENTS, "vpcId": "vpc-0123456789abcdef0"},
                  env=Environment(account="123456789012", region="eu-west-1"))
    assert not stack.resources("AWS::EC2::VPC")
    for props in functions(stack).values():
        assert props["VpcConfig"]["SubnetIds"]


def test_agent_calls_leave_through_ips_the_stack_outputs(default_stack: Synthesized) -> None:
    outputs = default_stack.document["Outputs"]
    (eip,) = default_stack.resources("AWS::EC2::EIP")
    # One NAT gateway by default: CDK writes a join of one as the value itself.
    assert outputs["AgentCallerIps"]["Value"] == {"Fn::GetAtt": [eip, "PublicIp"]}


def test_an_isolated_stack_has_no_caller_ips_to_output(full_stack: Synthesized) -> None:
    assert "AgentCallerIps" not in full_stack.document["Outputs"]


BILLING_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:of/billing-AbCdEf"
AGENT_AUTH = {
    "billing": {"auth": {"type": "bearer", "secret": f"secretsmanager:{BILLING_SECRET}"}},
    "account": {"auth": {"type": "api_key", "secret": "ssm:/of/account-key"}},
}


def test_orchestrate_alone_may_read_exactly_the_agents_secrets(synth: Synth) -> None:
    stack = synth({**AGENTS, "agentAuth": json.dumps(AGENT_AUTH)},
                  env=Environment(account="123456789012", region="eu-west-1"))
    props = functions(stack)
    env = props["OrchestrateFunction"]["Environment"]["Variables"]
    assert json.loads(env["AGENT_AUTH_BILLING"]) == AGENT_AUTH["billing"]
    assert json.loads(env["AGENT_AUTH_ACCOUNT"]) == AGENT_AUTH["account"]
    orchestrate_role = props["OrchestrateFunction"]["Role"]["Fn::GetAtt"][0]
    granted: dict[str, list[Any]] = {}
    for policy in stack.resources("AWS::IAM::Policy").values():
        roles = {role["Ref"] for role in policy["Properties"]["Roles"]}
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Action"] in ("secretsmanager:GetSecretValue", "ssm:GetParameter"):
                assert roles == {orchestrate_role}
                resource = statement["Resource"]
                granted[statement["Action"]] = resource if isinstance(resource, list) else [
                    resource]
    assert granted["secretsmanager:GetSecretValue"] == [BILLING_SECRET]
    (parameter,) = granted["ssm:GetParameter"]
    assert json.dumps(parameter).endswith(
        ':ssm:eu-west-1:123456789012:parameter/of/account-key"]]}')
    for name in READ_FUNCTIONS:
        assert not any(key.startswith("AGENT_") for key in props[name]["Environment"]["Variables"])
