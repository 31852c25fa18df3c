"""The error catalog (runbooks/errors.yaml): what each code means, whether to retry, what we do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.engine.schemas import schema_problems
from bot.engine.yamlfile import YamlProblem, load_yaml
from bot.exceptions import CatalogError


@dataclass(frozen=True)
class ErrorEntry:
    code: str
    service: str
    meaning: str
    retryable: bool
    decision: str
    http_status: int | None = None


class ErrorCatalog:
    def __init__(self, entries: dict[str, ErrorEntry]) -> None:
        self._entries = entries

    def entry(self, code: str) -> ErrorEntry | None:
        return self._entries.get(code)

    def is_retryable(self, code: str) -> bool:
        """The engine's one retry policy: what the catalog says; unknown codes are not retried."""
        entry = self._entries.get(code)
        return bool(entry and entry.retryable)

    def entries(self) -> list[ErrorEntry]:
        return sorted(self._entries.values(), key=lambda e: e.code)

    def __contains__(self, code: str) -> bool:
        return code in self._entries


def check_error_catalog(path: Path) -> list[str]:
    try:
        doc = load_yaml(path)
    except YamlProblem as problem:
        return [str(problem)]
    return schema_problems(doc, "errors.schema.json")


def load_error_catalog(path: Path) -> ErrorCatalog:
    problems = check_error_catalog(path)
    if problems:
        raise CatalogError(problems)
    data = load_yaml(path).data
    return ErrorCatalog(
        {
            code: ErrorEntry(
                code, e["service"], e["meaning"], bool(e["retryable"]), e["decision"], e.get("http_status")
            )
            for code, e in data["errors"].items()
        }
    )
