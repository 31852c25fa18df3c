"""Lambda event filtering (FilterCriteria patterns), as the event source mapping applies it.

As the Lambda developer guide's "Control which events Lambda sends to your function" says: rules
match leaf values only (a rule, `exists` included, never matches an object such as a DynamoDB
attribute's `{"S": ...}`); strings and numbers match exactly, numbers by their representation
(300 is not 300.0, and true is not 1); `numeric` matches JSON numbers only, so it never matches
a DynamoDB image, whose numbers are strings ("N": "5"); `exists: false` accepts a field whose
parents are missing too. EventBridge patterns match the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

_MISSING = object()


def matches_any(patterns: Iterable[dict[str, Any]], record: dict[str, Any]) -> bool:
    """No patterns: every record. Otherwise a record passes if any pattern matches it."""
    patterns = list(patterns)
    return not patterns or any(matches(p, record) for p in patterns)


def matches(pattern: dict[str, Any], record: Any) -> bool:
    for key, rule in pattern.items():
        value = record.get(key, _MISSING) if isinstance(record, dict) else _MISSING
        if isinstance(rule, dict):
            candidates = [c for c in (value if isinstance(value, list) else [value]) if isinstance(c, dict)]
            # No object here: its fields are all missing, which only `exists: false` accepts.
            if not any(matches(rule, c) for c in candidates or [{}]):
                return False
        elif isinstance(rule, list):
            if not _matches_values(rule, value):
                return False
        else:
            raise ValueError(f"filter pattern values must be lists or objects, not {rule!r} (at {key})")
    return True


def _matches_values(rules: list[Any], value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(_matches_one(rule, v) for rule in rules for v in values) or (
        value is _MISSING and any(isinstance(r, dict) and r.get("exists") is False for r in rules)
    )


def _matches_one(rule: Any, value: Any) -> bool:
    if isinstance(value, dict):
        return False  # an intermediate node: no rule matches it
    if not isinstance(rule, dict):
        return value is not _MISSING and _equal(rule, value)
    if "exists" in rule:
        return (value is not _MISSING) == bool(rule["exists"])
    if value is _MISSING:
        return "anything-but" in rule and False
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(rule["prefix"])
    if "suffix" in rule:
        return isinstance(value, str) and value.endswith(rule["suffix"])
    if "equals-ignore-case" in rule:
        return isinstance(value, str) and value.lower() == str(rule["equals-ignore-case"]).lower()
    if "anything-but" in rule:
        banned = rule["anything-but"]
        if isinstance(banned, dict):
            if "prefix" in banned:
                return not (isinstance(value, str) and value.startswith(banned["prefix"]))
            return not _matches_one(banned, value)
        return not any(_equal(b, value) for b in (banned if isinstance(banned, list) else [banned]))
    if "numeric" in rule:
        return _numeric(rule["numeric"], value)
    raise ValueError(f"unsupported filter rule {rule!r}")


def _equal(rule: Any, value: Any) -> bool:
    if isinstance(rule, bool | int | float) and isinstance(value, bool | int | float):
        return json.dumps(rule) == json.dumps(value)
    return type(rule) is type(value) and bool(rule == value)


def _numeric(spec: list[Any], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False  # a string that reads as a number is still a string
    number = float(value)
    ops = {
        "=": number.__eq__,
        "<": number.__lt__,
        "<=": number.__le__,
        ">": number.__gt__,
        ">=": number.__ge__,
    }
    return all(ops[spec[i]](float(spec[i + 1])) for i in range(0, len(spec), 2))
