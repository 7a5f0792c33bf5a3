"""The Orchestrator Flows stack: network, session cache, archive, core layer, functions, API,
monitoring, safe deploys."""

from __future__ import annotations

from typing import Any

from aws_cdk import Aspects, CfnOutput, Fn, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from infra.api import Api
from infra.archive import ArchiveTable
from infra.cache import SessionCache
from infra.checks import AcceptedFindings
from infra.config import StackConfig, flow_agents
from infra.deploys import SafeDeploys
from infra.functions import SERVICE, Functions
from infra.layer import CoreLayer
from infra.monitoring import Monitoring
from infra.network import Network


class OrchestratorFlowsStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, **kwargs: Any) -> None:
        # Production: a `cdk destroy` (or a console click) cannot delete the stack by accident.
        kwargs.setdefault("termination_protection", config.production)
        super().__init__(scope, id, **kwargs)
        tags = {"service": SERVICE, "stage": config.stage, "profile": config.profile}
        if config.owner is not None:
            tags["owner"] = config.owner
        for key, value in tags.items():
            Tags.of(self).add(key, value)
        agent_urls = config.agent_endpoints(flow_agents())
        self.network = Network(self, "Network", config=config)
        self.cache = SessionCache(self, "SessionCache", config=config, network=self.network)
        self.layer = CoreLayer(self, "CoreLayer")
        self.archive = ArchiveTable(self, "Archive", config=config)
        self.network.reach_dynamodb()
        self.functions = Functions(self, "Functions", config=config, network=self.network,
                                   cache=self.cache, layer=self.layer.layer,
                                   archive=self.archive, agent_urls=agent_urls)
        self.api = Api(self, "Api", config=config, functions=self.functions)
        self.monitoring = Monitoring(self, "Monitoring", config=config, api=self.api,
                                     functions=self.functions, cache=self.cache)
        self.deploys = SafeDeploys(self, "Deploys", config=config, functions=self.functions,
                                   alarms=self.monitoring.alarms)
        CfnOutput(self, "ApiUrl", value=self.api.url)
        CfnOutput(self, "RedisUrl", value=self.cache.redis_url)
        CfnOutput(self, "ArchiveTable", value=self.archive.table.table_name,
                  description="the DynamoDB table of archived calls (ARCHIVE_TABLE for "
                  "`orchestrator-flows verify`)")
        if self.network.nat_ips:
            CfnOutput(self, "AgentCallerIps", value=Fn.join(",", self.network.nat_ips),
                      description="the public IPs agent calls come from (the NAT gateways'): "
                      "agent owners may allow-list them")


def attach_checks(stack: Stack) -> None:
    """cdk-nag's AWS Solutions rules as a validation plugin: an unacknowledged finding fails
    synth. And checkov's accepted findings, written into the resources they concern."""
    Validations.of(stack).add_plugins(AwsSolutionsChecks(stack))
    Aspects.of(stack).add(AcceptedFindings())
