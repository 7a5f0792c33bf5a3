"""The synthesized template stays usable by `sam local invoke -t cdk.out/<Stack>.template.json`:
each function's and the layer's `aws:asset:path` points at staged code where the handler
resolves."""

from __future__ import annotations

import ast

from infra.functions import FUNCTIONS
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
