"""Safe deploys of orchestrate: CodeDeploy moves its `live` alias to a new version gradually
(10 % for five minutes first, in production) and moves it back when an alarm fires during the
move, or when the deployment fails or is stopped. The read functions' aliases move at once:
they hold no call state a bad version could spoil, and their alarms still page."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, Fn, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from constructs import Construct

from infra.config import StackConfig
from infra.functions import LIVE, Functions

# The alarms that stop and roll back a deploy of orchestrate: the new version's own 5xx rate
# and crashes (monitoring.py's canary alarms), and the API's 5xx rate and orchestrate's error
# rate. Not the agents' error rate: an agent's outage is not the new version's fault, and
# rolling back would not end it.
ROLLBACK_ALARMS = ("CanaryServerErrors", "CanaryCrashes", "Api5xxRate", "ErrorRate-orchestrate")


class SafeDeploys(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StackConfig, functions: Functions,
                 alarms: dict[str, cloudwatch.Alarm]) -> None:
        super().__init__(scope, id)
        live = functions.live["orchestrate"]
        # The canary alarms watch the new version by number: CloudFormation updates them to it
        # before it moves the alias.
        for name in ROLLBACK_ALARMS[:2]:
            live.node.add_dependency(alarms[name])
        self.group = codedeploy.LambdaDeploymentGroup(
            self, "Orchestrate", alias=live,
            deployment_config=getattr(codedeploy.LambdaDeploymentConfig, config.deployment),
            alarms=[alarms[name] for name in ROLLBACK_ALARMS],
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True))
        Validations.of(self.group).acknowledge(Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
               "service-role/AWSCodeDeployRoleForLambdaLimited]",
            reason="AWS's managed policy for CodeDeploy moving a Lambda alias, scoped by AWS to "
                   "what a Lambda deployment needs and kept current by AWS."))
        function = functions.by_name["orchestrate"].function_name
        CfnOutput(
            Stack.of(self), "Rollback",
            description="how to roll orchestrate back by hand",
            value=Fn.join("", [
                "during a deploy: aws deploy stop-deployment --auto-rollback-enabled "
                "--deployment-id <id from: aws deploy list-deployments --application-name ",
                self.group.application.application_name, " --deployment-group-name ",
                self.group.deployment_group_name, " --include-only-statuses InProgress>; "
                "after one: aws lambda update-alias --function-name ", function,
                f" --name {LIVE} --function-version <previous, from: aws lambda "
                "list-versions-by-function --function-name ", function, ">"]))
