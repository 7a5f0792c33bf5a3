"""The core layer, as the bundled synthesis builds it without Docker: the package and exactly its
locked runtime dependencies, binaries for CPython 3.13 on arm64, nothing from the extras."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from infra.layer import LOCAL_ONLY, PACKAGE, SOURCE, build_layer, layer_asset_hash
from infra.layer_lock import (
    LOCK,
    ROOT,
    RUNTIME_PROVIDED,
    canonical,
    read_hashed_lock,
    read_lock,
)
from tests.infra.conftest import Synthesized

ELF_MACHINE_AARCH64 = 183
NEVER_IN_THE_LAYER = ("a2a", "uvicorn", "pytest", "hypothesis", "aws_cdk", "cdk_nag", "jsii",
                      "constructs", "moto", "boto3", "botocore", "mypy", "ruff")


@pytest.fixture(scope="module")
def layer(bundled_stack: Synthesized) -> Path:
    (resource,) = [r for r in bundled_stack.file()["Resources"].values()
                   if r["Type"] == "AWS::Lambda::LayerVersion"]
    path: Path = bundled_stack.outdir / resource["Metadata"]["aws:asset:path"] / "python"
    return path


def installed(layer: Path) -> dict[str, str]:
    found = {}
    for info in layer.glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
        found[canonical(name)] = version
    return found


def test_the_layer_holds_the_package_under_python(layer: Path) -> None:
    package = layer / "orchestrator_flows"
    for module in ("engine.py", "lambda_app.py", "store/redis_backend.py", "default_flow.yaml"):
        assert (package / module).is_file(), module
    assert not (package / "local").exists()  # serve, demo agents, Lambda emulation
    assert (package / "api" / "routes.py").is_file()  # other folders are kept whole
    assert not list(layer.rglob("__pycache__"))


def test_the_layer_holds_exactly_the_locked_dependencies(layer: Path) -> None:
    assert installed(layer) == read_lock()


def test_nothing_from_the_extras_or_the_runtime_is_in_the_layer(layer: Path) -> None:
    for name in NEVER_IN_THE_LAYER:
        assert not (layer / name).exists(), name
    assert not set(installed(layer)) & RUNTIME_PROVIDED


def test_every_binary_is_built_for_cpython_3_13_on_arm64(layer: Path) -> None:
    binaries = list(layer.rglob("*.so"))
    assert any("pydantic_core" in str(path) for path in binaries)
    for path in binaries:
        assert ".cpython-313-aarch64-linux-gnu." in path.name or path.name.endswith(
            ".abi3.so"), path
        header = path.read_bytes()[:20]
        assert header[:4] == b"\x7fELF", path
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64, path


def test_every_module_level_import_of_the_package_resolves_in_the_layer(layer: Path) -> None:
    """What Lambda would import: each top-level import of the shipped package is the standard
    library, the package itself, something the layer holds, or botocore (the runtime's)."""
    present = {path.name.removesuffix(".py") for path in layer.iterdir()}
    for module in (layer / "orchestrator_flows").rglob("*.py"):
        for node in ast.parse(module.read_text()).body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                root = name.split(".")[0]
                assert (root in sys.stdlib_module_names or root in present
                        or root == "botocore"), f"{module.name}: import {name}"


def test_the_lock_satisfies_pyproject_s_runtime_dependencies() -> None:
    pins = read_lock()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in dependencies:
        requirement = Requirement(line)
        name = canonical(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]}: {line}"


def test_the_zipped_layer_is_far_below_lambda_s_limit(layer: Path, tmp_path: Path) -> None:
    unzipped = sum(path.stat().st_size for path in layer.rglob("*") if path.is_file())
    archive = Path(shutil.make_archive(str(tmp_path / "layer"), "zip", layer.parent))
    assert unzipped < 50 * 1024**2  # Lambda's limit is 250 MB unzipped, layers and code together
    assert archive.stat().st_size < unzipped


def test_every_pin_carries_the_sha256_of_its_wheel() -> None:
    pins = read_hashed_lock()
    assert pins.keys() == read_lock().keys()
    for name, (_, digest) in pins.items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest), name


def test_a_wheel_whose_bytes_differ_from_the_lock_fails_the_build(tmp_path: Path) -> None:
    name, (version, digest) = next(iter(read_hashed_lock().items()))
    tampered = tmp_path / "requirements.txt"
    tampered.write_text(f"{name}=={version} \\\n    --hash=sha256:{digest[::-1]}\n")
    with pytest.raises(subprocess.CalledProcessError):
        build_layer(tmp_path / "out", [sys.executable, "-m", "pip"], lock=tampered)
    assert not list((tmp_path / "out").rglob("*.dist-info"))


def test_the_layer_asset_hash_follows_what_is_shipped_and_how_it_is_built(
        tmp_path: Path) -> None:
    source = tmp_path / "core"
    shutil.copytree(SOURCE, source,
                    ignore=shutil.ignore_patterns("build", "__pycache__", "*.egg-info"))
    logic = tmp_path / "layer.py"
    logic.write_text("# how the layer is built\n")

    def digest() -> str:
        return layer_asset_hash(source, (logic,))

    first = digest()
    assert digest() == first
    package = source / PACKAGE
    for not_shipped in (package / "__pycache__" / "engine.cpython-313.pyc",
                        package / LOCAL_ONLY / "cli.py", source / "build" / "x"):
        not_shipped.parent.mkdir(parents=True, exist_ok=True)
        not_shipped.write_bytes(b"changed")
        assert digest() == first, not_shipped
    for shipped in (package / "engine.py", source / "requirements.txt", logic):
        before = shipped.read_bytes()
        shipped.write_bytes(before + b"\n# changed\n")
        assert digest() != first, shipped
        shipped.write_bytes(before)
        assert digest() == first, shipped
