"""The core layer: `orchestrator_flows` and its pinned runtime dependencies, built without Docker.

Bundling runs pip on this machine for the Lambda platform (wheels only, CPython 3.13, manylinux
arm64) and copies the package beside what it installed; Docker bundling with the same command is
only the fallback where local bundling cannot run (no pip)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.layer_lock import LOCK, ROOT, pip_target_args

SOURCE = ROOT / "layers" / "core"
PACKAGE = "orchestrator_flows"
# The package's local tools (serve, demo agents, Lambda emulation): never shipped in the layer.
# The demo agents need a2a-sdk and uvicorn, which the layer does not hold.
LOCAL_ONLY = "local"
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64


def build_layer(output_dir: Path, pip: list[str]) -> None:
    """Fill output_dir/python with the locked dependencies and the package."""
    target = output_dir / "python"
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", *pip_target_args(str(target)),
                    "-r", str(LOCK)], check=True)
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts: nothing runs them there
    shutil.copytree(SOURCE / PACKAGE, target / PACKAGE, dirs_exist_ok=True,
                    ignore=_ignore)


def _ignore(folder: str, names: list[str]) -> set[str]:
    """What is not copied: caches, and the package's own `local/` folder (only that one)."""
    left_out = {name for name in names if name == "__pycache__" or name.endswith(".pyc")}
    if Path(folder) == SOURCE / PACKAGE and LOCAL_ONLY in names:
        left_out.add(LOCAL_ONLY)
    return left_out


@jsii.implements(ILocalBundling)
class LocalPipBundling:
    """Bundles with this interpreter's pip: no Docker needed."""

    def try_bundle(self, output_dir: str, options: Any) -> bool:
        pip = [sys.executable, "-m", "pip"]
        if subprocess.run([*pip, "--version"], capture_output=True).returncode != 0:
            return False  # no pip here: let CDK fall back to Docker
        build_layer(Path(output_dir), pip)
        return True


class CoreLayer(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        docker_command = (
            "pip install --quiet --no-deps --no-compile "
            f"{' '.join(pip_target_args('/asset-output/python'))}"
            f" -r requirements.txt && cp -r {PACKAGE} /asset-output/python/"
            f" && rm -rf /asset-output/python/bin /asset-output/python/{PACKAGE}/__pycache__"
            f" /asset-output/python/{PACKAGE}/{LOCAL_ONLY}"
        )
        self.layer = lambda_.LayerVersion(
            self, "Layer",
            description="orchestrator_flows and its runtime dependencies",
            code=lambda_.Code.from_asset(
                str(SOURCE),
                # The source hash covers the package and requirements.txt: a new pin, a new layer.
                asset_hash_type=AssetHashType.SOURCE,
                exclude=["build", "**/__pycache__", "*.egg-info"],
                bundling=BundlingOptions(
                    image=RUNTIME.bundling_image,
                    command=["bash", "-c", docker_command],
                    # jsii calls try_bundle(output_dir, options) positionally.
                    local=cast(ILocalBundling, LocalPipBundling()),
                    platform="linux/arm64",
                ),
            ),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
        )
