"""cdk-nag's AWS Solutions rules pass on the stack, and every accepted finding says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from infra.checks import CHECKOV_ACCEPTED
from infra.functions import ACCEPTED_FINDINGS
from tests.infra.conftest import AGENTS, FULL_OPTIONS, Synth, Synthesized


@pytest.mark.parametrize("context", [AGENTS, FULL_OPTIONS], ids=["default", "every-option"])
def test_aws_solutions_checks_find_nothing_unacknowledged(synth: Synth,
                                                          context: dict[str, str]) -> None:
    stack = synth(context)  # synth raises ValidationFailed on any unacknowledged finding
    report = json.loads((stack.outdir / "validation-report.json").read_text())
    (plugin,) = report["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    assert plugin["conclusion"] == "success", plugin["violations"]


def test_the_checks_do_fail_a_stack_with_a_finding(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Careless")
    sqs.Queue(stack, "Queue")  # no dead-letter queue, no TLS-only policy
    Validations.of(stack).add_plugins(AwsSolutionsChecks(stack))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()


def test_every_accepted_finding_carries_a_reason() -> None:
    for finding, reason in ACCEPTED_FINDINGS.items():
        assert finding.startswith("AwsSolutions-")
        assert len(reason.split()) >= 8, finding


def test_checkov_s_accepted_findings_are_written_into_the_resources_they_concern(
        default_stack: Synthesized, prod_stack: Synthesized) -> None:
    def skipped(stack: Synthesized, logical_id: str) -> dict[str, str]:
        metadata = stack.document["Resources"][logical_id].get("Metadata", {})
        return {skip["id"]: skip["comment"] for skip in metadata.get("checkov", {}).get(
            "skip", [])}

    dev = skipped(default_stack, "OrchestrateFunction")
    assert set(dev) == {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_173"}
    # in prod orchestrate has its reserved concurrency: nothing to accept there
    assert set(skipped(prod_stack, "OrchestrateFunction")) == {"CKV_AWS_116", "CKV_AWS_173"}
    for name in default_stack.resources("AWS::Logs::LogGroup"):
        assert set(skipped(default_stack, name)) == {"CKV_AWS_158"}
    assert not skipped(default_stack, next(iter(
        default_stack.resources("AWS::ElastiCache::ServerlessCache"))))


def test_every_accepted_template_finding_carries_a_reason() -> None:
    for accepted in CHECKOV_ACCEPTED:
        assert accepted.check.startswith("CKV_")
        assert len(accepted.reason.split()) >= 8, accepted.check
