"""The four Lambda functions, one per endpoint, built in one loop over their specs: each gets the
core layer, the VPC, its own log group and only the environment its routes need."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.cache import SessionCache
from infra.config import REDIS_MARGIN_SECONDS, ROOT, StackConfig
from infra.layer import ARCHITECTURE, RUNTIME
from infra.network import Network

SERVICE = "orchestrator-flows"
MANAGED_POLICY = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/{}"
# cdk-nag findings on the functions, each with why it is accepted.
ACCEPTED_FINDINGS = {
    f"AwsSolutions-IAM4[{MANAGED_POLICY.format('AWSLambdaBasicExecutionRole')}]":
        "AWS's managed policy for a function's own log writes, kept current by AWS.",
    f"AwsSolutions-IAM4[{MANAGED_POLICY.format('AWSLambdaVPCAccessExecutionRole')}]":
        "AWS's managed policy for the ENIs a function in a VPC needs, kept current by AWS.",
    "AwsSolutions-IAM5[Resource::*]":
        "Only X-Ray's PutTraceSegments/PutTelemetryRecords, which take no resource ARN.",
    "AwsSolutions-L1":
        "python3.13 is the runtime the layer's wheels are locked for (infra/layer_lock.py); "
        "a newer runtime is a deliberate re-lock and rebuild, not a silent bump.",
}


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # its folder under functions/
    routes: tuple[tuple[str, str], ...]  # (HTTP method, path)
    calls_agents: bool
    description: str

    @property
    def logical_id(self) -> str:
        """Stable in the template, so `sam local invoke … OrchestrateFunction` keeps working."""
        return "".join(part.title() for part in self.name.split("_")) + "Function"


FUNCTIONS = (
    FunctionSpec("orchestrate", (("POST", "/orchestrate"),), calls_agents=True,
                 description="POST /orchestrate: one turn of a call"),
    FunctionSpec("get_session", (("GET", "/session/{call_identify_id}"), ("GET", "/healthz"),
                                 ("GET", "/readyz")),
                 calls_agents=False,
                 description="GET /session/{id}, GET /healthz (liveness), GET /readyz (Redis)"),
    FunctionSpec("get_steps", (("GET", "/session/{call_identify_id}/steps"),),
                 calls_agents=False, description="GET /session/{id}/steps: the audit trail"),
    FunctionSpec("delete_session", (("DELETE", "/session/{call_identify_id}"),),
                 calls_agents=False, description="DELETE /session/{id}: end a call"),
)


def metrics_namespace(config: StackConfig) -> str:
    return f"OrchestratorFlows/{config.stage}"


class Functions(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, network: Network,
                 cache: SessionCache, layer: lambda_.ILayerVersion,
                 agent_urls: dict[str, str]) -> None:
        super().__init__(scope, id)
        self.by_name: dict[str, lambda_.Function] = {}
        for spec in FUNCTIONS:
            environment = {
                "REDIS_URL": cache.redis_url,
                "REDIS_MODE": "cluster",
                "SESSION_TTL_SECONDS": str(config.session_ttl_seconds),
                "POWERTOOLS_SERVICE_NAME": SERVICE,
                "POWERTOOLS_METRICS_NAMESPACE": metrics_namespace(config),
                "POWERTOOLS_LOG_LEVEL": config.log_level,
                "POWERTOOLS_TRACE_DISABLED": "false",
            }
            if spec.calls_agents:
                environment["AGENT_TIMEOUT_SECONDS"] = f"{config.agent_timeout_seconds:g}"
                environment.update({f"AGENT_URL_{name.upper()}": url
                                    for name, url in agent_urls.items()})
                # Where each agent's credentials are read from, never the credentials.
                environment.update({f"AGENT_AUTH_{name.upper()}": json.dumps(credentials)
                                    for name, credentials in config.agent_auth.items()})
                environment.update({f"AGENT_VERSIONS_{name.upper()}": json.dumps(versions)
                                    for name, versions in config.agent_versions.items()})
                if config.allow_http_agents:
                    environment["AGENT_ALLOW_HTTP"] = "true"
            log_group = logs.LogGroup(self, f"{spec.name}-logs",
                                      retention=config.log_retention,
                                      removal_policy=RemovalPolicy.DESTROY)
            function = lambda_.Function(
                self, spec.name,
                description=spec.description,
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                handler="app.handler",
                code=lambda_.Code.from_asset(str(ROOT / "functions" / spec.name),
                                             exclude=["__pycache__", "*.pyc"]),
                layers=[layer],
                memory_size=(config.orchestrate_memory_mb if spec.calls_agents
                             else config.read_memory_mb),
                # A turn: the agent's deadline plus two Redis scripts; a read: one script.
                timeout=Duration.seconds(config.function_timeout_seconds if spec.calls_agents
                                         else REDIS_MARGIN_SECONDS),
                vpc=network.vpc,
                vpc_subnets=network.subnets,
                security_groups=[network.function_group],
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                environment=environment,
                reserved_concurrent_executions=(config.reserved_concurrency if spec.calls_agents
                                                else None),
            )
            cast(lambda_.CfnFunction, function.node.default_child).override_logical_id(
                spec.logical_id)
            if spec.calls_agents:
                self._grant_agent_secrets(function, config)
            self.by_name[spec.name] = function
        Validations.of(self).acknowledge(*(
            Acknowledgment(id=f"AwsSolutions::{finding}", reason=reason)
            for finding, reason in ACCEPTED_FINDINGS.items()))

    @staticmethod
    def _grant_agent_secrets(function: lambda_.Function, config: StackConfig) -> None:
        """Read access to exactly the secrets and parameters the agents' credentials name."""
        stack = Stack.of(function)
        arns = config.secret_arns(stack.partition, stack.region, stack.account)
        if arns["secretsmanager"]:
            function.add_to_role_policy(iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=arns["secretsmanager"]))
        if arns["ssm"]:
            function.add_to_role_policy(iam.PolicyStatement(
                actions=["ssm:GetParameter"], resources=arns["ssm"]))
