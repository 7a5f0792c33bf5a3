"""The template checks' findings this stack accepts, each with its reason, written where the
finding arises: checkov reads a resource's `Metadata.checkov.skip`. cdk-nag's acknowledgements
stay beside the constructs they concern; cfn-lint's one accepted rule (W3005, CDK's redundant
DependsOn) is in `.cfnlintrc.yaml`. `bash scripts/lint-template` runs the checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jsii
from aws_cdk import CfnResource, IAspect
from constructs import IConstruct


@dataclass(frozen=True)
class Accepted:
    check: str
    resource_type: str
    reason: str
    applies: Callable[[CfnResource], bool] = lambda resource: True


CHECKOV_ACCEPTED = (
    Accepted("CKV_AWS_115", "AWS::Lambda::Function",
             "Reads are bounded by the API's throttle; a reservation for each would take from "
             "the account's pool for nothing. Orchestrate's is sized in the prod profile "
             "(reservedConcurrency).",
             lambda resource: getattr(resource, "reserved_concurrent_executions", None) is None),
    Accepted("CKV_AWS_116", "AWS::Lambda::Function",
             "API Gateway invokes synchronously (a dead-letter queue applies to asynchronous "
             "invocations only); the sweeper's failed run is retried by the next one, and its "
             "errors alarm."),
    Accepted("CKV_AWS_173", "AWS::Lambda::Function",
             "The environment holds no secret (URLs, names, and secrets' ARNs only); Lambda "
             "encrypts it at rest with its own key."),
    Accepted("CKV_AWS_158", "AWS::Logs::LogGroup",
             "CloudWatch Logs encrypts at rest; the functions log no unmasked caller data "
             "(masking.py), and the VPC and access logs hold addresses and ids only."),
    Accepted("CKV_AWS_117", "AWS::Lambda::Function",
             "CDK's own handler that empties the VPC's default security group (prod): it calls "
             "only the EC2 API, once per deploy, and needs no VPC.",
             lambda resource: "VpcRestrictDefaultSG" in resource.node.path),
    Accepted("CKV_AWS_149", "AWS::SecretsManager::Secret",
             "The password of the cache's disabled default user, which nothing authenticates "
             "as: a customer-managed key would protect nothing more."),
)


@jsii.implements(IAspect)
class AcceptedFindings:
    """Writes each accepted finding into the Metadata of the resources it concerns."""

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, CfnResource):
            return
        skips = [{"id": accepted.check, "comment": accepted.reason}
                 for accepted in CHECKOV_ACCEPTED
                 if accepted.resource_type == node.cfn_resource_type
                 and accepted.applies(node)]
        if skips:
            node.add_metadata("checkov", {"skip": skips})
