"""The Lambda artifact `sam build` makes (CONTRACT §1): each function carries the bot package and the
validated runbooks, the layer carries exactly the locked runtime dependencies, built for Lambda's
platform (CPython 3.12 on arm64), never for the machine that ran the build.

`scripts/test` runs `make sam-build` before pytest, which builds into `.aws-sam/build` (SAM's
default; the scripts set no variable naming another build folder). That build is used when it
began after the last change to every file it is built from; otherwise this module runs
`make sam-build` itself.
Plain `sam build` is also run once in a copy of the checkout with no `.venv`, `.tools` or build
cache, as a fresh clone is.
"""

from __future__ import annotations

import filecmp
import os
import pickle
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement

from bot import catalog
from bot.local.template import _CfnLoader, load_template

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / ".aws-sam" / "build"
BUILD_GRAPH = REPO / ".aws-sam" / "build.toml"  # SAM writes it as a build begins
BUILD_STARTED = REPO / ".aws-sam" / "build-started"  # touched by `build` before it runs `make`
FUNCTIONS = sorted(load_template().functions())
EM_X86_64, EM_AARCH64 = 62, 183
# The Lambda runtime the layer is built for (python3.12, arm64, Amazon Linux: glibc).
LAMBDA_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "aarch64",
    "os_name": "posix",
    "extra": "",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build_sources() -> list[Path]:
    """Everything `make sam-build` reads: a build older than any of them is stale."""
    files = [REPO / n for n in ("template.yaml", "uv.lock", "pyproject.toml", "Makefile", "samconfig.toml")]
    files += [REPO / "scripts" / "build-lambda", *REPO.glob("bot/**/*.py")]
    files += [p for p in REPO.glob("runbooks/**/*") if p.is_file() and ".compiled" not in p.parts]
    return files


def sam_cli_requirement() -> str:
    match = re.search(r"^SAM_CLI\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile pins the SAM CLI it runs"
    return match.group(1)


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run(
        command, check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def ensure_sam() -> None:
    """Skip only when the build tools cannot be had: make, uv/uvx, or the pinned SAM CLI."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed, so `make sam-build` cannot run")
    uvx = REPO / ".tools" / "bin" / "uvx"
    if not uvx.exists():
        bootstrap = run(["make", "--no-print-directory", ".tools/bin/uv"], timeout=600)
        if bootstrap.returncode != 0 or not uvx.exists():
            pytest.skip(f"uvx is unavailable (`make .tools/bin/uv` failed): {bootstrap.stderr[-500:]}")
    probe = run([str(uvx), "--from", sam_cli_requirement(), "sam", "--version"], timeout=600)
    if probe.returncode != 0:
        pytest.skip(f"the SAM CLI ({sam_cli_requirement()}) is unavailable: {probe.stderr[-500:]}")


def build_started() -> float | None:
    """When the build in `.aws-sam/build` began, as late as can be known; None if there is none.

    A source edited while a build runs may or may not be in it, yet it is older than the finished
    template: only a build that began after every source's last change is current. SAM rewrites
    `.aws-sam/build.toml` as a build begins, before any artifact; a build this module runs also
    leaves BUILD_STARTED, written before `make` starts. The earlier of the two is used: a stamp
    left by an older build only makes a newer build look stale, never the reverse. A build that
    began and did not finish (its template older than its start) counts as none."""
    built = BUILD / "template.yaml"
    if not built.exists() or not BUILD_GRAPH.exists():
        return None
    if built.stat().st_mtime < BUILD_GRAPH.stat().st_mtime:
        return None
    starts = [BUILD_GRAPH.stat().st_mtime]
    if BUILD_STARTED.exists():
        starts.append(BUILD_STARTED.stat().st_mtime)
    return min(starts)


@pytest.fixture(scope="module")
def build() -> Path:
    built = BUILD / "template.yaml"
    newest = max(p.stat().st_mtime for p in build_sources())
    started = build_started()
    if started is not None and started > newest:
        return BUILD
    ensure_sam()
    BUILD_STARTED.parent.mkdir(parents=True, exist_ok=True)
    BUILD_STARTED.touch()
    started = BUILD_STARTED.stat().st_mtime
    result = run(["make", "--no-print-directory", "sam-build"], timeout=1100)
    if result.returncode != 0:
        pytest.fail(f"`make sam-build` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    assert built.stat().st_mtime >= started - 1, "sam build wrote .aws-sam/build/template.yaml"
    return BUILD


@pytest.fixture(scope="module")
def layer(build: Path) -> Path:
    return build / "DependenciesLayer" / "python"


@pytest.fixture
def fresh_catalog() -> Iterator[None]:
    yield


# -- uv.lock ------------------------------------------------------------------------------------


def lock() -> dict[str, Any]:
    return tomllib.loads((REPO / "uv.lock").read_text())


def lock_entry(packages: list[dict[str, Any]], name: str, version: str | None) -> dict[str, Any]:
    candidates = [p for p in packages if p["name"] == name and (version is None or p["version"] == version)]
    if len(candidates) > 1:
        candidates = [
            p
            for p in candidates
            if any(
                Marker(m).evaluate(LAMBDA_ENV) for m in p.get("resolution-markers", ["python_version > '0'"])
            )
        ]
    (entry,) = candidates
    return entry


def closure(roots: list[dict[str, Any]]) -> dict[str, str]:
    """Normalized name → locked version of every package `roots` pull in on Lambda's platform."""
    packages = lock()["package"]
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        dep = todo.pop()
        if "marker" in dep and not Marker(dep["marker"]).evaluate(LAMBDA_ENV):
            continue
        entry = lock_entry(packages, dep["name"], dep.get("version"))
        first = normalize(entry["name"]) not in found
        found[normalize(entry["name"])] = entry["version"]
        for extra in dep.get("extra", []):
            todo += entry.get("optional-dependencies", {}).get(extra, [])
        if first:
            todo += entry.get("dependencies", [])
    return found


def project() -> dict[str, Any]:
    (entry,) = [p for p in lock()["package"] if p.get("source", {}).get("editable") == "."]
    return entry


def runtime_packages() -> dict[str, str]:
    return closure(list(project()["dependencies"]))


def dev_only_packages() -> set[str]:
    return set(closure(list(project()["optional-dependencies"]["dev"]))) - set(runtime_packages())


def installed(layer: Path) -> dict[str, str]:
    found = {}
    for dist in layer.glob("*.dist-info"):
        name, _, version = dist.name.removesuffix(".dist-info").partition("-")
        found[normalize(name)] = version
    return found


# -- ELF --------------------------------------------------------------------------------------------


def elf_header(path: Path) -> tuple[int, int, int] | None:
    """(class, byte order, e_machine) of an ELF file, None for anything else."""
    with path.open("rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return head[4], head[5], int.from_bytes(head[18:20], order)


# -- each function ------------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_holds_only_the_bot_package_and_the_runbooks(build, function):
    root = build / function
    assert sorted(p.name for p in root.iterdir()) == ["bot", "runbooks"], "dependencies live in the layer"
    assert not list(root.rglob("__pycache__")), "no bytecode compiled for this machine's Python"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_ships_every_handler_module_and_this_checkouts_code(build, function):
    root = build / function
    handler = load_template().functions()[function]["Handler"]
    assert (root / (handler.rpartition(".")[0].replace(".", "/") + ".py")).is_file(), handler
    for module in (REPO / "bot" / "handlers").glob("*.py"):
        assert (root / "bot" / "handlers" / module.name).is_file(), module.name
    sources = sorted(p.relative_to(REPO) for p in REPO.glob("bot/**/*.py") if "__pycache__" not in p.parts)
    shipped = sorted(p.relative_to(root) for p in root.glob("bot/**/*.py"))
    assert shipped == sources
    changed = [str(p) for p in sources if not filecmp.cmp(REPO / p, root / p, shallow=False)]
    assert changed == [], "the build is older than the code"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_ships_the_runbooks_partners_schemas_and_error_catalog(build, function):
    shipped_root = build / function / "runbooks"

    def library(root: Path) -> list[Path]:
        return sorted(
            p.relative_to(root) for p in root.rglob("*") if p.is_file() and ".compiled" not in p.parts
        )

    assert library(shipped_root) == library(REPO / "runbooks")
    assert {"schema.json", "errors.yaml", "partners"} <= {p.name for p in shipped_root.iterdir()}
    for name in library(REPO / "runbooks"):
        assert filecmp.cmp(REPO / "runbooks" / name, shipped_root / name, shallow=False), name


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_functions_compiled_catalog_matches_its_runbooks_so_a_cold_start_uses_it(
    build, function, fresh_catalog, monkeypatch
):
    runbooks = build / function / "runbooks"
    pickles = list((runbooks / ".compiled").glob("catalog-*.pickle"))
    assert pickles == [catalog.compiled_path(runbooks)], "one catalog, named by the shipped files' hash"
    compiled = pickle.loads(pickles[0].read_bytes())
    assert isinstance(compiled, catalog.Catalog)
    expected = {p.stem for p in (REPO / "runbooks").glob("*.yaml")} - {"errors"}
    assert set(compiled.runbooks) == expected
    assert set(compiled.partners) == {p.stem for p in (REPO / "runbooks" / "partners").glob("*.yaml")}

    def refuse(root: Path) -> None:
        raise AssertionError("the shipped catalog was validated from source")

    monkeypatch.setattr(catalog, "_validated", refuse)
    assert set(catalog.load_catalog(runbooks).runbooks) == expected


def test_the_built_template_points_each_function_at_its_own_artifact(build):
    built = yaml.load((build / "template.yaml").read_text(), Loader=_CfnLoader)
    resources = built["Resources"]
    for function in FUNCTIONS:
        assert resources[function]["Properties"]["CodeUri"] == function
        assert (
            resources[function]["Properties"]["Handler"] == load_template().functions()[function]["Handler"]
        )
    assert resources["DependenciesLayer"]["Properties"]["ContentUri"] == "DependenciesLayer"


# -- the dependencies layer ---------------------------------------------------------------------------


def test_the_layer_holds_the_projects_runtime_dependencies_importable_from_python(layer):
    assert layer.is_dir(), "Lambda adds /opt/python to sys.path: the layer's packages live there"
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    present = installed(layer)
    for requirement in map(Requirement, dependencies):
        assert normalize(requirement.name) in present, requirement.name
        assert requirement.specifier.contains(present[normalize(requirement.name)]), requirement
    for module in ("slack_bolt", "slack_sdk", "aws_lambda_powertools", "yaml", "jsonschema", "boto3"):
        assert (layer / module / "__init__.py").is_file(), module
    assert (layer / "simpleeval.py").is_file()
    assert not (layer / "bot").exists(), "the bot's own code ships with each function, not in the layer"


def test_the_layer_holds_exactly_the_locked_runtime_closure_at_the_locked_versions(layer):
    assert installed(layer) == runtime_packages()


def test_the_layer_holds_no_dev_only_package(layer):
    dev_only = dev_only_packages()
    assert {"pytest", "moto", "hypothesis", "mypy", "ruff", "playwright"} <= dev_only
    assert set(installed(layer)) & dev_only == set()
    for module in ("pytest", "_pytest", "moto", "hypothesis", "mypy", "ruff", "playwright"):
        assert not (layer / module).exists() and not (layer / f"{module}.py").exists(), module


def test_every_compiled_extension_is_for_cpython_312_on_aarch64(layer):
    extensions = list(layer.rglob("*.so"))
    assert extensions, "pyyaml and rpds-py ship compiled extensions"
    for so in extensions:
        assert re.search(r"\.(cpython-312-aarch64-linux-gnu|abi3)\.so$", so.name), so.name
        assert elf_header(so) == (2, 1, EM_AARCH64), f"{so} is not a 64-bit little-endian AArch64 ELF"
    assert not list(layer.rglob("*.pyd")) and not list(layer.rglob("*.dylib"))


def test_no_binary_in_the_layer_is_built_for_x86_64(layer):
    machines = {}
    for path in layer.rglob("*"):
        if path.is_file() and not path.is_symlink() and (header := elf_header(path)):
            machines[path.relative_to(layer).as_posix()] = header[2]
    assert machines, "the layer has ELF files to check"
    assert [p for p, m in machines.items() if m == EM_X86_64] == []
    assert {p: m for p, m in machines.items() if m != EM_AARCH64} == {}


def test_every_wheel_in_the_layer_is_pure_or_tagged_for_lambdas_platform(layer):
    for dist in layer.glob("*.dist-info"):
        lines = (dist / "WHEEL").read_text().splitlines()
        tags = [line.removeprefix("Tag:").strip() for line in lines if line.startswith("Tag:")]
        assert tags, dist.name
        for tag in tags:
            python, abi, platform = tag.split("-")
            pure = abi == "none" and platform == "any"
            lambda_binary = (
                python == "cp312"
                and abi in {"cp312", "abi3"}
                and re.fullmatch(r"(manylinux\w*|linux)_aarch64", platform) is not None
            )
            assert pure or lambda_binary or (abi == "abi3" and python.startswith("cp3")), (dist.name, tag)
            if not pure:
                assert platform.endswith("_aarch64") and "musllinux" not in platform, (dist.name, tag)


def test_the_layer_has_no_bytecode_compiled_here(layer):
    assert not list(layer.rglob("__pycache__"))


# -- plain `sam build` from a fresh clone (CONTRACT §6) -------------------------------------------


def checkout_files() -> list[Path]:
    """This working tree as a clone would have it: tracked and untracked files git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [Path(p) for p in listed.split("\0") if p and (REPO / p).is_file()]


@pytest.fixture(scope="module")
def fresh_clone_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, set[Path]]:
    """`sam build`, exactly as a SAM user types it, in a copy with no .venv, .tools or node_modules,
    with a build cache of its own: the build must bootstrap its tools from PyPI."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed, so the checkout cannot be listed")
    ensure_sam()
    clone = tmp_path_factory.mktemp("fresh") / "runbook-bot"
    for name in checkout_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    before = {p.relative_to(clone) for p in clone.rglob("*")}
    venv_bin = str(REPO / ".venv" / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT"}
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["RUNBOOK_BOT_BUILD_CACHE"] = str(tmp_path_factory.mktemp("build-cache"))
    env["SAM_CLI_TELEMETRY"] = "0"
    uvx = REPO / ".tools" / "bin" / "uvx"
    result = subprocess.run(
        [str(uvx), "--from", sam_cli_requirement(), "sam", "build"],
        cwd=clone,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    if result.returncode != 0:
        pytest.fail(f"`sam build` in a fresh clone failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return clone, result.stdout + result.stderr, before


def test_plain_sam_build_builds_a_fresh_clone_without_a_venv(fresh_clone_build):
    clone, output, _ = fresh_clone_build
    build = clone / ".aws-sam" / "build"
    for function in FUNCTIONS:
        assert sorted(p.name for p in (build / function).iterdir()) == ["bot", "runbooks"], function
        assert list((build / function / "runbooks" / ".compiled").glob("catalog-*.pickle")), function
    assert installed(build / "DependenciesLayer" / "python") == runtime_packages()
    assert "CopySource" not in output, "samconfig.toml builds in source: no copy of the checkout per function"


def test_a_fresh_clone_build_leaves_the_checkout_as_it_was(fresh_clone_build):
    clone, _, before = fresh_clone_build
    after = {p.relative_to(clone) for p in clone.rglob("*")}
    added = sorted(str(p) for p in after - before if p.parts[0] != ".aws-sam")
    assert added == [], "the build's tools live in its cache, never in the checkout"
