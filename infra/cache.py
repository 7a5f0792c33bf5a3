"""The session cache: ElastiCache Serverless (Valkey), always TLS and encrypted at rest, reached
only from the functions' security group on 6379, as `rediss://…` in cluster mode."""

from __future__ import annotations

from aws_cdk import Fn
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from constructs import Construct

from infra.config import StackConfig
from infra.network import Network

PORT = 6379


class SessionCache(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, network: Network) -> None:
        super().__init__(scope, id)
        self.security_group = ec2.SecurityGroup(
            self, "CacheGroup", vpc=network.vpc, allow_all_outbound=False,
            description="Orchestrator Flows session cache: the functions only")
        self.security_group.add_ingress_rule(
            network.function_group, ec2.Port.tcp(PORT), "Orchestrator Flows functions")
        subnets = network.vpc.select_subnets(subnet_type=network.subnet_type)
        self.cache = elasticache.CfnServerlessCache(
            self, "Cache",
            engine="valkey",
            major_engine_version="8",
            serverless_cache_name=f"orchestrator-flows-{config.stage}",
            description="Orchestrator Flows call sessions (1 h sliding TTL)",
            security_group_ids=[self.security_group.security_group_id],
            subnet_ids=subnets.subnet_ids,
            cache_usage_limits=elasticache.CfnServerlessCache.CacheUsageLimitsProperty(
                data_storage=elasticache.CfnServerlessCache.DataStorageProperty(
                    unit="GB", maximum=config.cache_max_data_gb),
                ecpu_per_second=elasticache.CfnServerlessCache.ECPUPerSecondProperty(
                    maximum=config.cache_max_ecpu_per_second),
            ),
        )
        self.redis_url = Fn.join("", ["rediss://", self.cache.attr_endpoint_address, ":",
                                      self.cache.attr_endpoint_port])
