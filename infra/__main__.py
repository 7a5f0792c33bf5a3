"""The CDK app: `cdk synth` / `cdk deploy` run it through cdk.json (`python -m infra`)."""

from __future__ import annotations

import os
import sys

from aws_cdk import App, Environment

from infra.config import ConfigError, StackConfig
from infra.stack import OrchestratorFlowsStack, attach_checks


def main() -> None:
    app = App()
    try:
        config = StackConfig.from_context(app.node)
        account = os.environ.get("CDK_DEFAULT_ACCOUNT")
        region = os.environ.get("CDK_DEFAULT_REGION")
        # Environment-agnostic unless the CLI knows the account (an existing VPC needs it).
        env = Environment(account=account, region=region) if account and region else None
        stack = OrchestratorFlowsStack(app, f"OrchestratorFlows-{config.stage}", config=config,
                                       env=env)
    except ConfigError as exc:
        sys.exit(f"infra: {exc}")
    attach_checks(stack)
    app.synth()


if __name__ == "__main__":
    main()
