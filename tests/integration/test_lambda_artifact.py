"""What `sam build` produces: handlers, runbooks and dependencies built for Lambda (arm64, CPython 3.12)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from bot.local.template import load_template

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / ".aws-sam" / "build"
EM_AARCH64, EM_X86_64 = 183, 62
DEV_ONLY = ("pytest", "moto", "hypothesis", "mypy", "ruff", "playwright")


def newest_source() -> float:
    sources = [
        REPO / "template.yaml",
        REPO / "uv.lock",
        *REPO.glob("bot/**/*.py"),
        *REPO.glob("runbooks/**/*"),
    ]
    return max(p.stat().st_mtime for p in sources if p.is_file())


@pytest.fixture(scope="module")
def build() -> Path:
    built = BUILD / "template.yaml"
    if not built.exists() or built.stat().st_mtime < newest_source():
        if shutil.which("make") is None:
            pytest.skip("make is not installed, so `make sam-build` cannot run")
        subprocess.run(["make", "--no-print-directory", "sam-build"], cwd=REPO, check=True)
    return BUILD


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.parametrize("function", sorted(load_template().functions()))
def test_each_function_holds_its_handler_and_the_validated_runbooks(build, function):
    root = build / function
    handler = load_template().functions()[function]["Handler"]
    module = handler.rpartition(".")[0]
    assert (root / (module.replace(".", "/") + ".py")).is_file()
    shipped = sorted(p.name for p in (root / "runbooks").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (REPO / "runbooks").glob("*.yaml"))
    assert sorted(p.name for p in (root / "runbooks" / "partners").glob("*.yaml"))
    assert list((root / "runbooks" / ".compiled").glob("catalog-*.pickle")), "the compiled catalog ships"
    assert not list(root.rglob("__pycache__"))


def test_the_layer_holds_the_locked_dependencies_built_for_lambda_not_for_this_machine(build):
    layer = build / "DependenciesLayer" / "python"
    extensions = list(layer.rglob("*.so"))
    assert extensions, "compiled dependencies (pyyaml, rpds) are in the layer"
    for so in extensions:
        assert "x86_64" not in so.name and elf_machine(so) == EM_AARCH64, so
        assert "cpython-312" in so.name or "abi3" in so.name, so
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"].replace("-", "_").lower(): p["version"] for p in lock["package"]}
    installed = {}
    for dist in layer.glob("*.dist-info"):
        name, _, version = dist.name[: -len(".dist-info")].partition("-")
        installed[name.replace("-", "_").lower()] = version
    for name in ("slack_bolt", "slack_sdk", "aws_lambda_powertools", "pyyaml", "boto3", "simpleeval"):
        assert installed.get(name) == locked[name], name
    assert not [n for n in installed if n.startswith(DEV_ONLY)], "no dev-only package in the layer"
