"""Where the functions and the session cache live: a new VPC (or an existing one from context)
and the functions' security group. Private subnets have egress through NAT by default, since the
agents are HTTP endpoints; `isolated` builds no NAT, for agents inside the VPC."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StackConfig


class Network(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig) -> None:
        super().__init__(scope, id)
        self.subnet_type = (ec2.SubnetType.PRIVATE_ISOLATED if config.isolated
                            else ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.nat_ips: list[str] = []  # none built here: an isolated or an existing VPC
        if config.vpc_id is not None:
            self.vpc: ec2.IVpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=config.vpc_id)
        else:
            subnets = [ec2.SubnetConfiguration(name="private", subnet_type=self.subnet_type,
                                               cidr_mask=22)]
            if not config.isolated:
                subnets.insert(0, ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24))
            # Production takes away every rule of the VPC's default security group (CDK's
            # custom resource does it at deploy): nothing can use it by mistake.
            vpc = ec2.Vpc(self, "Vpc", max_azs=2, subnet_configuration=subnets,
                          nat_gateways=0 if config.isolated else config.nat_gateways,
                          restrict_default_security_group=config.production)
            flow_logs = logs.LogGroup(self, "FlowLogs",
                                      retention=config.log_retention,
                                      removal_policy=config.logs_removal)
            vpc.add_flow_log("FlowLog",
                             destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                             traffic_type=ec2.FlowLogTrafficType.REJECT)
            self.vpc = vpc
            # Agent owners allow-list these: every call to an agent leaves through them.
            self.nat_ips = [eip.attr_public_ip for subnet in vpc.public_subnets
                            if isinstance(eip := subnet.node.try_find_child("EIP"), ec2.CfnEIP)]
        self.subnets = ec2.SubnetSelection(subnet_type=self.subnet_type)
        # Outbound open: the functions call agents at URLs only the context knows.
        self.function_group = ec2.SecurityGroup(
            self, "FunctionGroup", vpc=self.vpc, allow_all_outbound=True,
            description="Orchestrator Flows functions")

    def reach_dynamodb(self) -> None:
        """A gateway endpoint for DynamoDB (free): the archive is reached without the NAT,
        and from isolated subnets at all. Only where the stack builds the VPC: an existing one
        is its owner's to equip."""
        if isinstance(self.vpc, ec2.Vpc):
            self.vpc.add_gateway_endpoint(
                "DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB,
                subnets=[self.subnets])
