"""The Lambda functions, one per endpoint and the scheduled sweeper, built in one loop over
their specs: each gets the core layer, the VPC, its own log group, only the environment its
routes need, and only the access to the archive its work needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

from aws_cdk import Acknowledgment, Annotations, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.archive import Access, ArchiveTable
from infra.cache import SessionCache
from infra.config import API_GATEWAY_TIMEOUT_SECONDS, REDIS_MARGIN_SECONDS, ROOT, StackConfig
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
    routes: tuple[tuple[str, str], ...]  # (HTTP method, path); none for the scheduled sweeper
    calls_agents: bool
    description: str
    archive: Access = "none"
    timeout_seconds: int = REDIS_MARGIN_SECONDS  # a read: one Redis script, or two DynamoDB reads

    @property
    def logical_id(self) -> str:
        """Stable in the template, so `sam local invoke … OrchestrateFunction` keeps working."""
        return "".join(part.title() for part in self.name.split("_")) + "Function"


SWEEPER = "sweeper"
LIVE = "live"
FUNCTIONS = (
    FunctionSpec("orchestrate", (("POST", "/orchestrate"),), calls_agents=True,
                 description="POST /orchestrate: one turn of a call"),
    FunctionSpec("get_session", (("GET", "/session/{call_identify_id}"), ("GET", "/healthz"),
                                 ("GET", "/readyz")),
                 calls_agents=False, archive="read",
                 description="GET /session/{id}, GET /healthz (liveness), GET /readyz (Redis)"),
    FunctionSpec("get_steps", (("GET", "/session/{call_identify_id}/steps"),),
                 calls_agents=False, archive="read",
                 description="GET /session/{id}/steps: the audit trail"),
    FunctionSpec("delete_session", (("DELETE", "/session/{call_identify_id}"),),
                 calls_agents=False, archive="archive", timeout_seconds=15,
                 description="DELETE /session/{id}: end a call (archived first)"),
    FunctionSpec("list_calls", (("GET", "/accounts/{account_id}/calls"),),
                 calls_agents=False, archive="list",
                 description="GET /accounts/{id}/calls: an account's archived calls"),
    FunctionSpec("erase_account", (("DELETE", "/accounts/{account_id}/data"),),
                 calls_agents=False, archive="erase",
                 timeout_seconds=API_GATEWAY_TIMEOUT_SECONDS - 1,
                 description="DELETE /accounts/{id}/data: erase an account's calls"),
    FunctionSpec(SWEEPER, (), calls_agents=False, archive="archive", timeout_seconds=0,
                 description="Scheduled: archive the calls that are due"),
)


def metrics_namespace(config: StackConfig) -> str:
    return f"OrchestratorFlows/{config.stage}"


class Functions(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, network: Network,
                 cache: SessionCache, layer: lambda_.ILayerVersion, archive: ArchiveTable,
                 agent_urls: dict[str, str]) -> None:
        super().__init__(scope, id)
        self.by_name: dict[str, lambda_.Function] = {}
        self.live: dict[str, lambda_.Alias] = {}
        self.timeout_seconds: dict[str, int] = {}
        for spec in FUNCTIONS:
            environment = {
                "REDIS_URL": cache.redis_url,
                "REDIS_MODE": "cluster",
                # Authenticated with an IAM token for this user and cache (AWS_REGION is Lambda's).
                "REDIS_IAM_USER": cache.user_id,
                "REDIS_CACHE_NAME": cache.name,
                "SESSION_TTL_SECONDS": str(config.session_ttl_seconds),
                # Every function knows the table: orchestrate to schedule its calls in the
                # archive's index (it has no access to the table itself).
                "ARCHIVE_TABLE": archive.table.table_name,
                "RETENTION_DAYS": str(config.retention_days),
                "ARCHIVE_IDLE_SECONDS": str(config.archive_idle_seconds),
                "POWERTOOLS_SERVICE_NAME": SERVICE,
                "POWERTOOLS_METRICS_NAMESPACE": metrics_namespace(config),
                "POWERTOOLS_LOG_LEVEL": config.log_level,
                "POWERTOOLS_TRACE_DISABLED": "false",
            }
            if spec.calls_agents:
                environment["AGENT_TIMEOUT_SECONDS"] = f"{config.agent_timeout_seconds:g}"
                environment["TURN_WAIT_SECONDS"] = f"{config.turn_wait_seconds:g}"
                environment.update({f"AGENT_URL_{name.upper()}": url
                                    for name, url in agent_urls.items()})
                # Where each agent's credentials are read from, never the credentials.
                environment.update({f"AGENT_AUTH_{name.upper()}": json.dumps(credentials)
                                    for name, credentials in config.agent_auth.items()})
                environment.update({f"AGENT_VERSIONS_{name.upper()}": json.dumps(versions)
                                    for name, versions in config.agent_versions.items()})
                if config.allow_http_agents:
                    environment["AGENT_ALLOW_HTTP"] = "true"
            timeout = self.timeout_seconds[spec.name] = self._timeout(spec, config)
            log_group = logs.LogGroup(self, f"{spec.name}-logs",
                                      retention=config.log_retention,
                                      removal_policy=config.logs_removal)
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
                timeout=Duration.seconds(timeout),
                vpc=network.vpc,
                vpc_subnets=network.subnets,
                security_groups=[network.function_group],
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                environment=environment,
                reserved_concurrent_executions=(
                    config.reserved_concurrency if spec.calls_agents
                    else 1 if spec.name == SWEEPER  # one sweep at a time (two would be safe)
                    else None),
                # Restored from a snapshot of the initialized function, on published versions
                # (the alias below): the layer's hooks (snapshot.py) renew what a snapshot must
                # not carry over.
                snap_start=(lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if config.snap_start
                            else None),
                # A version stays when the next is published: rolling back by hand (the
                # Rollback output) moves the alias to it. Lambda stops caching an unused
                # version's snapshot after 14 days; old versions are pruned by hand.
                current_version_options=lambda_.VersionOptions(
                    removal_policy=RemovalPolicy.RETAIN),
            )
            cast(lambda_.CfnFunction, function.node.default_child).override_logical_id(
                spec.logical_id)
            if config.snap_start:  # it is: every caller reaches a version, through the alias
                Annotations.of(function).acknowledge_warning(
                    "@aws-cdk/aws-lambda:snapStartRequirePublish")
            # Callers (the API, the schedule) reach a published version through the `live`
            # alias: a deploy moves it (gradually for orchestrate, see deploys.py), a rollback
            # moves it back.
            self.live[spec.name] = lambda_.Alias(
                self, f"{spec.name}-live", alias_name=LIVE, version=function.current_version,
                provisioned_concurrent_executions=(config.provisioned_concurrency
                                                   if spec.calls_agents else None))
            if spec.calls_agents:
                self._grant_agent_secrets(function, config)
            cache.grant_connect(function)
            archive.grant(function, spec.archive)
            self.by_name[spec.name] = function
        self.sweep = events.Rule(
            self, "SweepSchedule", schedule=events.Schedule.rate(
                Duration.minutes(config.sweep_minutes)),
            description="Orchestrator Flows: archive the calls that are due")
        # Not retried: the next run takes what this one left, and overlapping runs gain nothing.
        self.sweep.add_target(targets.LambdaFunction(self.live[SWEEPER], retry_attempts=0))
        if config.reserved_concurrency is not None and (
                config.reserved_concurrency < config.concurrency_at_throttle):
            Annotations.of(self.by_name["orchestrate"]).add_warning_v2(
                "orchestrate:concurrency",
                f"orchestrate's reserved concurrency ({config.reserved_concurrency}) is below "
                f"the API's throttle rate with every turn at its timeout "
                f"({config.throttle_rate_limit:g}/s x {config.function_timeout_seconds} s = "
                f"{config.concurrency_at_throttle}): at that load Lambda throttles turns (the "
                "API answers 5xx); raise accountConcurrency (after a quota increase) or lower "
                "throttleRateLimit")
        Validations.of(self).acknowledge(*(
            Acknowledgment(id=f"AwsSolutions::{finding}", reason=reason)
            for finding, reason in ACCEPTED_FINDINGS.items()))

    @staticmethod
    def _timeout(spec: FunctionSpec, config: StackConfig) -> int:
        if spec.calls_agents:  # a turn: its wait, the agent's deadline, two Redis scripts
            return config.function_timeout_seconds
        if spec.name == SWEEPER:  # done before the next run starts
            return config.sweep_minutes * 60 - 30 if config.sweep_minutes > 1 else 45
        return spec.timeout_seconds

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
