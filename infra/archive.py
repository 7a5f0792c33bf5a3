"""The archive: one DynamoDB table per stack (the layout is `archive/store.py`'s: a call's items
under `CALL#<id>`, the account index GSI1, the TTL attribute `expires_at`), on demand, with
point-in-time recovery and encryption at rest under a KMS key; outside dev it is kept when the
stack goes and cannot be deleted by accident. And what each function may do with it."""

from __future__ import annotations

from typing import Literal

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import StackConfig

ACCOUNT_INDEX = "GSI1"
# What each function does with the archive, and the DynamoDB actions that takes (nothing more:
# the read functions read, and only the erasure deletes).
Access = Literal["none", "read", "list", "archive", "erase"]
ACTIONS: dict[Access, tuple[str, ...]] = {
    "none": (),
    "read": ("dynamodb:GetItem", "dynamodb:Query"),
    "list": ("dynamodb:Query",),
    "archive": ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem",
                "dynamodb:ConditionCheckItem"),
    "erase": ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
              "dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"),
}


class ArchiveTable(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig) -> None:
        super().__init__(scope, id)
        keep = config.outside_dev
        string = dynamodb.AttributeType.STRING
        self.table = dynamodb.TableV2(
            self, "Table",
            partition_key=dynamodb.Attribute(name="PK", type=string),
            sort_key=dynamodb.Attribute(name="SK", type=string),
            billing=dynamodb.Billing.on_demand(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            time_to_live_attribute="expires_at",
            deletion_protection=keep,
            removal_policy=RemovalPolicy.RETAIN if keep else RemovalPolicy.DESTROY,
            global_secondary_indexes=[dynamodb.GlobalSecondaryIndexPropsV2(
                index_name=ACCOUNT_INDEX,
                partition_key=dynamodb.Attribute(name="GSI1PK", type=string),
                sort_key=dynamodb.Attribute(name="GSI1SK", type=string),
                projection_type=dynamodb.ProjectionType.ALL)],
        )

    def grant(self, role: iam.IGrantable, access: Access) -> None:
        """`access` on the table and its account index, by their exact ARNs."""
        actions = ACTIONS[access]
        if not actions:
            return
        resources = [f"{self.table.table_arn}/index/{ACCOUNT_INDEX}"]
        if access != "list":  # the list reads the index alone
            resources.insert(0, self.table.table_arn)
        iam.Grant.add_to_principal(grantee=role, actions=list(actions), resource_arns=resources)
