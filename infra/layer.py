"""The core layer: `orchestrator_flows` and its pinned runtime dependencies, built without Docker.

Bundling runs pip on this machine for the Lambda platform (wheels only, CPython 3.13, manylinux
arm64) and copies the package beside what it installed; Docker bundling with the same command is
only the fallback where local bundling cannot run (no pip)."""

from __future__ import annotations

import hashlib
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


def build_layer(output_dir: Path, pip: list[str], lock: Path = LOCK) -> None:
    """Fill output_dir/python with the locked dependencies (each wheel checked against its
    hash) and the package."""
    target = output_dir / "python"
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-compile", "--require-hashes",
                    "--disable-pip-version-check", *pip_target_args(str(target)),
                    "-r", str(lock)], check=True)
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts: nothing runs them there
    shutil.copytree(SOURCE / PACKAGE, target / PACKAGE, dirs_exist_ok=True,
                    ignore=_ignore)


# What decides the layer's bytes beside its source folder: how it is built.
BUILD_LOGIC = (Path(__file__).resolve(), ROOT / "infra" / "layer_lock.py")


def _left_out(relative: Path) -> bool:
    """What no build of the layer holds: caches, pip's build folder, the local tools."""
    parts = relative.parts
    return (parts[0] == "build" or "__pycache__" in parts or relative.suffix == ".pyc"
            or any(part.endswith(".egg-info") for part in parts)
            or parts[:2] == (PACKAGE, LOCAL_ONLY))


def layer_asset_hash(source: Path = SOURCE, build_logic: tuple[Path, ...] = BUILD_LOGIC) -> str:
    """The layer's asset hash: every shipped file of the source folder (the package and the
    hashed lock), by path and content, and the build logic. Same inputs, same hash: CDK reuses
    the built asset and Lambda the published layer version; any change, a new one."""
    digest = hashlib.sha256()
    files = sorted(path for path in source.rglob("*")
                   if path.is_file() and not _left_out(path.relative_to(source)))
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for path in build_logic:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


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
            "pip install --quiet --no-deps --no-compile --require-hashes "
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
                # The package, the hashed lock and the build logic: a change to any, a new layer.
                asset_hash_type=AssetHashType.CUSTOM,
                asset_hash=layer_asset_hash(),
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
