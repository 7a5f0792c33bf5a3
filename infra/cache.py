"""The session cache: ElastiCache Serverless (Valkey), always TLS and encrypted at rest, reached
only from the functions' security group (6379, and 6380 for its read endpoint), as `rediss://…`
in cluster mode, by a user that authenticates with IAM.

Access control: a user group holding the functions' user (IAM authentication: its password is
a SigV4 token the function signs, kv/iam_auth.py; no secret to store or rotate) and a disabled
`default` user (a user group must hold one; its password is generated into Secrets Manager and
never used). Each function's role may `elasticache:Connect` as that user to that cache only.

The cache's name carries a hash of the properties whose change replaces it (its subnets): a
replacement gets a new name, so CloudFormation can create it beside the old one instead of
failing on the name the old one still holds."""

from __future__ import annotations

import hashlib
import json

from aws_cdk import Acknowledgment, Fn, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import StackConfig
from infra.network import Network

PORT = 6379
READER_PORT = 6380
ENGINE = "valkey"
# What the functions' user may do: every command but the dangerous ones (FLUSHALL, CONFIG,
# KEYS, DEBUG, ...), on the project's keys only (every key is under `of:`). Tested against a
# real redis-server running the whole store as such a user (tests/integration).
ACCESS_STRING = "on ~of:* +@all -@dangerous"
SNAPSHOT_TIME = "03:00"  # UTC, daily, outside dev


def cache_name(config: StackConfig, replacing: object) -> str:
    """`of-<stage>-<hash of what replaces the cache>`: at most 32 characters (40 allowed)."""
    digest = hashlib.sha256(json.dumps(replacing, sort_keys=True).encode()).hexdigest()[:8]
    return f"of-{config.stage}-{digest}"


class SessionCache(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, network: Network) -> None:
        super().__init__(scope, id)
        self.security_group = ec2.SecurityGroup(
            self, "CacheGroup", vpc=network.vpc, allow_all_outbound=False,
            description="Orchestrator Flows session cache: the functions only")
        for port, what in ((PORT, "primary"), (READER_PORT, "reader")):
            self.security_group.add_ingress_rule(
                network.function_group, ec2.Port.tcp(port),
                f"Orchestrator Flows functions ({what} endpoint)")
        subnets = network.vpc.select_subnets(subnet_type=network.subnet_type)
        stack = Stack.of(self)
        # A subnet replaced (another CIDR, AZ or VPC) has a new id: the cache must be replaced.
        self.name = cache_name(config, stack.resolve(
            [[subnet.subnet_id, subnet.ipv4_cidr_block, subnet.availability_zone]
             for subnet in subnets.subnets]))
        # The user's id is its name: ElastiCache's IAM authentication requires it.
        self.user_id = f"orchestrator-flows-{config.stage}"
        user = elasticache.CfnUser(
            self, "FunctionsUser", engine=ENGINE, user_id=self.user_id, user_name=self.user_id,
            access_string=ACCESS_STRING, authentication_mode={"Type": "iam"})
        default_password = secretsmanager.Secret(
            self, "DefaultUserPassword",
            description="Orchestrator Flows: the cache's disabled default user (never used)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=32))
        Validations.of(default_password).acknowledge(Acknowledgment(
            id="AwsSolutions::AwsSolutions-SMG4",
            reason="The password of a disabled user that nothing authenticates as: rotating it "
                   "would protect nothing."))
        default_user = elasticache.CfnUser(
            self, "DefaultUser", engine=ENGINE, user_id=f"orchestrator-flows-{config.stage}-off",
            user_name="default", access_string="off -@all",
            authentication_mode={"Type": "password",
                                 "Passwords": [default_password.secret_value.unsafe_unwrap()]})
        group = elasticache.CfnUserGroup(
            self, "Users", engine=ENGINE, user_group_id=f"orchestrator-flows-{config.stage}",
            user_ids=[user.user_id, default_user.user_id])
        group.add_dependency(user)
        group.add_dependency(default_user)
        self.cache = elasticache.CfnServerlessCache(
            self, "Cache",
            engine=ENGINE,
            major_engine_version="8",
            serverless_cache_name=self.name,
            description="Orchestrator Flows call sessions (1 h sliding TTL)",
            security_group_ids=[self.security_group.security_group_id],
            subnet_ids=subnets.subnet_ids,
            user_group_id=group.user_group_id,
            cache_usage_limits=elasticache.CfnServerlessCache.CacheUsageLimitsProperty(
                data_storage=elasticache.CfnServerlessCache.DataStorageProperty(
                    unit="GB", maximum=config.cache_max_data_gb),
                ecpu_per_second=elasticache.CfnServerlessCache.ECPUPerSecondProperty(
                    maximum=config.cache_max_ecpu_per_second),
            ),
            # Outside dev, a daily snapshot kept for a week: live calls can be restored into a
            # new cache after an operator's mistake. Dev keeps none (it costs per GB stored).
            daily_snapshot_time=SNAPSHOT_TIME if config.outside_dev else None,
            snapshot_retention_limit=7 if config.outside_dev else None,
        )
        self.cache.add_dependency(group)
        self.user_arn = user.attr_arn
        self.redis_url = Fn.join("", ["rediss://", self.cache.attr_endpoint_address, ":",
                                      self.cache.attr_endpoint_port])

    def grant_connect(self, grantee: iam.IGrantable) -> None:
        """`elasticache:Connect` as the functions' user, to this cache only."""
        iam.Grant.add_to_principal(grantee=grantee, actions=["elasticache:Connect"],
                                   resource_arns=[self.cache.attr_arn, self.user_arn])
