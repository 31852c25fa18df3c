"""The project's one YAML loader: safe, with the line of every node for `file:line: message`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class YamlProblem(ValueError):
    """A file that is not valid YAML (or repeats a key); `line` is 1-based."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path, self.line = path, line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class YamlDoc:
    path: str
    data: Any
    lines: dict[Path_, int]

    def line_of(self, at: Path_) -> int:
        """The line of `at`, or of its nearest enclosing node."""
        at = tuple(at)
        while at not in self.lines and at:
            at = at[:-1]
        return self.lines.get(at, 1)


def load_yaml(path: Path | str, text: str | None = None) -> YamlDoc:
    name = str(path)
    source = Path(path).read_text(encoding="utf-8") if text is None else text
    loader = yaml.SafeLoader(source)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        data = _build(loader, node, (), lines, name) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise YamlProblem(
            name, (mark.line + 1) if mark else 1, f"not valid YAML: {error.problem or error}"
        ) from None
    finally:
        loader.dispose()
    return YamlDoc(name, data, lines)


def _build(loader: yaml.SafeLoader, node: yaml.Node, at: Path_, lines: dict[Path_, int], name: str) -> Any:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in out:
                first = lines.get((*at, key), 0)
                raise YamlProblem(
                    name, key_node.start_mark.line + 1, f"key `{key}` repeats the one on line {first}"
                )
            lines[(*at, key)] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, (*at, key), lines, name)
            lines[(*at, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, child, (*at, i), lines, name) for i, child in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
