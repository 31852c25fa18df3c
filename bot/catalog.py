"""Runbooks, partners and the error catalog, loaded and validated; each function's services object
loads it once per sandbox and keeps it (bot/handlers/services.py)."""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bot.engine.errors import ErrorCatalog, check_error_catalog, load_error_catalog
from bot.engine.model import Runbook
from bot.exceptions import CatalogError
from bot.partners.model import Partner

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
COMPILED_DIR = ".compiled"


@dataclass(frozen=True)
class Catalog:
    runbooks: dict[str, Runbook]
    partners: dict[str, Partner]
    errors: ErrorCatalog
    root: Path


def runbooks_root() -> Path:
    return _root(
        os.environ.get("RUNBOOKS_DIR") or "runbooks", os.environ.get("LAMBDA_TASK_ROOT"), os.getcwd()
    )


@cache
def _root(configured_text: str, task_root: str | None, cwd: str) -> Path:
    configured = Path(configured_text)
    if configured.is_absolute():
        return configured
    for base in (task_root, cwd, str(PACKAGE_ROOT)):
        if base and (Path(base) / configured).is_dir():
            return (Path(base) / configured).resolve()
    return (PACKAGE_ROOT / configured).resolve()


def load_catalog(root: Path | None = None) -> Catalog:
    return _load(str((root or runbooks_root()).resolve()))


def fingerprint(root: Path) -> str:
    """The content hash of every runbook, partner, schema and catalog file under `root`."""
    digest = hashlib.sha256()
    files = sorted([*root.glob("*.yaml"), *root.glob("*.json"), *(root / "partners").glob("*.yaml")])
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def compiled_path(root: Path) -> Path:
    return root / COMPILED_DIR / f"catalog-{fingerprint(root)}.pickle"


def compile_catalog(root: Path) -> Path:
    """Validate everything under `root` and keep the result next to it, for fast cold starts.

    `sam build` runs this on the runbooks it packages. At load time the file is only used when
    its name matches the content hash of the files beside it, so an edited runbook is always
    validated again (the slow path) rather than trusted.
    """
    catalog = _validated(root.resolve())
    target = compiled_path(root)
    target.parent.mkdir(exist_ok=True)
    for stale in target.parent.glob("catalog-*.pickle"):
        if stale != target:
            stale.unlink(missing_ok=True)  # another build may have removed it first
    # Written beside and renamed into place: a cold start (or a second build) reading the file
    # meanwhile sees the whole old catalog or the whole new one, never half a pickle.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(pickle.dumps(catalog, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(partial, target)
    return target


def _load(root_text: str) -> Catalog:
    root = Path(root_text)
    compiled = compiled_path(root)
    if compiled.exists():
        catalog = pickle.loads(compiled.read_bytes())  # noqa: S301 - our own build artifact, hash-checked
        if isinstance(catalog, Catalog):
            return catalog
    return _validated(root)


def _validated(root: Path) -> Catalog:
    from bot.actions import REGISTRY
    from bot.engine.loader import load_runbook
    from bot.engine.partner_files import load_partner

    problems: list[str] = []
    runbooks: dict[str, Runbook] = {}
    for path in sorted(root.glob("*.yaml")):
        if path.name == "errors.yaml":
            continue
        try:
            runbook = load_runbook(path, REGISTRY)
            runbooks[runbook.name] = runbook
        except CatalogError as error:
            problems += error.problems
    partners: dict[str, Partner] = {}
    for path in sorted((root / "partners").glob("*.yaml")):
        try:
            partner = load_partner(path, runbooks)
            partners[partner.name] = partner
        except CatalogError as error:
            problems += error.problems
    errors = ErrorCatalog({})
    try:
        errors = load_error_catalog(root / "errors.yaml")
    except CatalogError as error:
        problems += error.problems
    except FileNotFoundError:
        problems.append(f"{root / 'errors.yaml'}:1: the error catalog is missing")
    if problems:
        raise CatalogError(problems)
    return Catalog(runbooks, partners, errors, root)


def validate_paths(paths: list[Path]) -> list[str]:
    """`runbook-bot validate`: every problem in the given files or folders (default: the runbooks root)."""
    from bot.actions import REGISTRY
    from bot.engine.loader import load_runbook
    from bot.engine.partner_files import load_partner

    files: list[Path] = []
    for path in paths or [runbooks_root()]:
        if path.is_dir():
            files += sorted(path.glob("*.yaml")) + sorted((path / "partners").glob("*.yaml"))
        elif path.exists():
            files.append(path)
        else:
            return [f"{path}:1: no such file or folder"]
    problems: list[str] = []
    runbooks: dict[str, Runbook] = {}
    for path in [f for f in files if f.parent.name != "partners" and f.name != "errors.yaml"]:
        try:
            runbook = load_runbook(path, REGISTRY)
            runbooks[runbook.name] = runbook
        except CatalogError as error:
            problems += error.problems
    if not runbooks:
        try:
            runbooks = dict(load_catalog().runbooks)  # partners checked alone still need the runbooks
        except CatalogError:
            runbooks = {}
    for path in [f for f in files if f.parent.name == "partners"]:
        try:
            load_partner(path, runbooks)
        except CatalogError as error:
            problems += error.problems
    for path in [f for f in files if f.name == "errors.yaml"]:
        problems += check_error_catalog(path)
    return problems
