"""cdk-nag's AWS Solutions rules pass on the stack, and every accepted finding says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from infra.functions import ACCEPTED_FINDINGS
from tests.infra.conftest import AGENTS, FULL_OPTIONS, Synth


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
