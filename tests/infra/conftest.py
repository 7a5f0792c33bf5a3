"""Synthesized stacks for the infra tests: the CDK app run in-process, offline, no Docker.

Most tests read a template synthesized with bundling skipped (seconds); the layer and SAM tests
read one full synthesis whose layer was bundled locally with pip, as `cdk synth` does."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# jsii prints a banner on Node 20 (the machine's); the app is tested on it.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App, Environment
from aws_cdk.assertions import Template

from infra.config import StackConfig
from infra.stack import OrchestratorFlowsStack, attach_checks

AGENTS = {"agentBaseUrl": "https://agents.example.com"}
FULL_OPTIONS = {
    **AGENTS, "stage": "prod", "isolated": "true", "jwtIssuer": "https://idp.example.com/",
    "jwtAudience": "ivr-platform,chat-platform", "alarmEmail": "oncall@example.com",
    "corsAllowOrigins": "https://console.example.com", "reservedConcurrency": "50",
    "agentUrls": '{"auth": "https://auth.example.net/a2a/"}', "owner": "ivr-team@example.com",
}
# The prod profile as `cdk deploy -c stage=prod` builds it, with NAT gateways.
PROD = {**AGENTS, "stage": "prod", "owner": "ivr-team@example.com",
        "alarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:pager"}


@dataclass
class Synthesized:
    stack: OrchestratorFlowsStack
    template: Template
    outdir: Path

    @property
    def document(self) -> dict[str, Any]:
        return dict(self.template.to_json())

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: resource for name, resource in self.document["Resources"].items()
                if resource["Type"] == kind}

    def file(self) -> dict[str, Any]:
        name = f"{self.stack.stack_name}.template.json"
        return json.loads((self.outdir / name).read_text())  # type: ignore[no-any-return]


Synth = Callable[..., Synthesized]


def synthesize(outdir: Path, context: dict[str, Any], *, bundle: bool = False,
               env: Environment | None = None, checks: bool = True) -> Synthesized:
    # As the CLI runs it: asset metadata on (what `sam local invoke` reads); bundling only if asked.
    cli_context: dict[str, Any] = {"aws:cdk:enable-asset-metadata": True}
    if not bundle:
        cli_context["aws:cdk:bundling-stacks"] = []
    app = App(outdir=str(outdir), post_cli_context=cli_context)
    config = StackConfig.from_mapping(context)
    stack = OrchestratorFlowsStack(app, f"OrchestratorFlows-{config.stage}", config=config,
                                   env=env)
    if checks:
        attach_checks(stack)
    app.synth()
    return Synthesized(stack, Template.from_stack(stack), outdir)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    def run(context: dict[str, Any], **options: Any) -> Synthesized:
        return synthesize(tmp_path_factory.mktemp("cdk"), context, **options)

    return run


@pytest.fixture(scope="session")
def default_stack(synth: Synth) -> Synthesized:
    return synth(AGENTS)


@pytest.fixture(scope="session")
def full_stack(synth: Synth) -> Synthesized:
    return synth(FULL_OPTIONS)


@pytest.fixture(scope="session")
def prod_stack(synth: Synth) -> Synthesized:
    return synth(PROD)


@pytest.fixture(scope="session")
def bundled_stack(synth: Synth) -> Synthesized:
    """With the layer bundled locally: pip downloads wheels for the Lambda platform."""
    return synth(AGENTS, bundle=True)
