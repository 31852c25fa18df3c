"""JSON Schema checks of YAML documents, each problem reported at the line it stands on."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from bot.engine.yamlfile import YamlDoc

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "runbooks"


@cache
def _validator(schema_file: str, root: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads((Path(root) / schema_file).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_problems(doc: YamlDoc, schema_file: str, root: Path = SCHEMA_DIR) -> list[str]:
    validator = _validator(schema_file, str(root))
    problems = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        where = ".".join(map(str, path)) or "the file"
        line = doc.line_of(path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # Point at the first unexpected key itself, not at the mapping that holds it.
            allowed = set(error.schema.get("properties", {}))
            extra = [k for k in error.instance if k not in allowed]
            if extra:
                line = doc.line_of((*path, extra[0]))
        problems.append(f"{doc.path}:{line}: {where}: {_message(error)}")
    return problems


def _message(error: Any) -> str:
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"{error.message}; allowed keys: {allowed}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "pattern":
        return f"{error.instance!r} does not match {error.validator_value}"
    return str(error.message)
