"""The synthesized template stays usable by `sam local invoke -t cdk.out/<Stack>.template.json`:
each function's and the layer's `aws:asset:path` points at staged code where the handler
resolves."""

from __future__ import annotations

import ast
import json

from infra.config import ROOT
from infra.functions import FUNCTIONS
from orchestrator_flows.settings import Settings
from tests.infra.conftest import Synthesized


def test_each_function_s_asset_holds_its_handler(bundled_stack: Synthesized) -> None:
    resources = bundled_stack.file()["Resources"]
    for spec in FUNCTIONS:
        function = resources[spec.logical_id]
        asset = bundled_stack.outdir / function["Metadata"]["aws:asset:path"]
        assert sorted(path.name for path in asset.iterdir()) == ["app.py"], spec.name
        module, attribute = function["Properties"]["Handler"].split(".")
        source = asset / f"{module}.py"
        tree = ast.parse(source.read_text())
        assigned = {target.id for node in tree.body if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)}
        assert attribute in assigned, spec.name
        assert function["Metadata"]["aws:asset:property"] == "Code"


def test_each_function_s_layer_is_staged_with_its_python_folder(
        bundled_stack: Synthesized) -> None:
    resources = bundled_stack.file()["Resources"]
    for spec in FUNCTIONS:
        (layer,) = resources[spec.logical_id]["Properties"]["Layers"]
        metadata = resources[layer["Ref"]]["Metadata"]
        assert metadata["aws:asset:property"] == "Content"
        staged = bundled_stack.outdir / metadata["aws:asset:path"]
        assert (staged / "python" / "orchestrator_flows" / "lambda_app.py").is_file()


def test_the_shipped_env_file_starts_every_function_against_a_local_redis(
        default_stack: Synthesized) -> None:
    """`sam local invoke … --env-vars events/env.json`: SAM replaces only the variables the
    function's template declares (its "Parameters" serve every function). What it leaves is
    the template's own, and a CloudFormation function SAM cannot resolve must not be among it."""
    overrides = json.loads((ROOT / "events" / "env.json").read_text())["Parameters"]
    resources = default_stack.document["Resources"]
    for spec in FUNCTIONS:
        declared = resources[spec.logical_id]["Properties"]["Environment"]["Variables"]
        env = {key: overrides.get(key, value) for key, value in declared.items()}
        assert {key for key, value in env.items() if not isinstance(value, str)} == set(), \
            spec.name
        settings = Settings.from_env({**env, "AWS_REGION": "eu-west-1"}, deployed=True)
        assert settings.redis_url == "redis://127.0.0.1:6379/0"
        assert settings.redis_mode == "standalone"
        assert settings.redis_iam_user is None  # the local server takes no IAM token
        assert settings.archive_table is None  # and there is no table to archive to
        if spec.calls_agents:  # the demo agents on loopback, allowed over http
            agents = settings.load_flow().agents
            assert {agent.url for agent in agents.values()} <= {
                f"http://127.0.0.1:{port}/" for port in range(9101, 9111)}
