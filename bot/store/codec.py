"""Execution <-> DynamoDB item (the low-level attribute-value format of streams and the client)."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from decimal import Decimal
from typing import Any

from bot.store import keys
from bot.store.model import Approval, EventKind, Execution, Status, StepRecord, TimelineEvent

# Attributes that live on the state item but are not Execution fields.
_STORAGE_ONLY = {keys.PK, keys.SK, keys.DUE_BUCKET, keys.HISTORY_PK, keys.HISTORY_AT, keys.APPROVED_BY}
_KEEP = {"steps", "params"}  # always written, even empty


def to_attribute(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value. Our own few lines, not boto3's serializer:
    importing boto3 costs the Slack ack path ~0.1 s of its cold start."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be stored in DynamoDB")
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, dict):
        return {"M": {str(k): to_attribute(v) for k, v in value.items()}}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return {"L": [to_attribute(v) for v in items]}
    if isinstance(value, Status | EventKind):
        return {"S": value.value}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB: {value!r}")


def from_attribute(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as plain Python (numbers as int or float)."""
    if not value:
        return {}  # DynamoDB Local's stream images show an empty map as {}
    (kind, inner), *_ = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        number = Decimal(inner)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "BOOL":
        return bool(inner)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: from_attribute(v) for k, v in inner.items()}
    if kind == "L":
        return [from_attribute(v) for v in inner]
    if kind == "B":
        return inner if isinstance(inner, bytes) else base64.b64decode(inner)
    if kind in {"SS", "BS"}:
        return sorted(inner)
    if kind == "NS":
        return sorted(from_attribute({"N": n}) for n in inner)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def to_item(ex: Execution) -> dict[str, Any]:
    """The full state item for a new execution."""
    plain = plain_fields(ex)
    # Empty values are left out (reading fills in the defaults); `steps` stays because commits
    # SET steps.<id> inside it.
    item = {k: to_attribute(v) for k, v in plain.items() if k in _KEEP or v not in (None, "", [], {})}
    item.update({k: {"S": v} for k, v in keys.state_key(ex.execution_id).items()})
    if ex.due_at_ms is not None:
        item[keys.DUE_BUCKET] = {"S": keys.due_bucket(ex.execution_id)}
    # The run's place in its partner's history (history-index): set once, it never moves.
    item[keys.HISTORY_PK] = {"S": keys.partner_history(ex.partner)}
    item[keys.HISTORY_AT] = {"N": str(ex.created_at_ms)}
    return item


def plain_fields(ex: Execution) -> dict[str, Any]:
    return {f.name: to_plain(getattr(ex, f.name)) for f in dataclasses.fields(ex)}


def to_plain(value: Any) -> Any:
    """Dataclasses and enums to plain data, as they are stored."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Status | EventKind):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def from_item(item: dict[str, Any]) -> Execution:
    """An Execution from a state item (GetItem result or a stream record's image)."""
    data = {k: from_attribute(v) for k, v in item.items() if k not in _STORAGE_ONLY}
    return execution_from_plain(data)


def execution_from_plain(data: dict[str, Any]) -> Execution:
    known = {f.name for f in dataclasses.fields(Execution)}
    fields = {k: v for k, v in data.items() if k in known}
    fields["status"] = Status(fields["status"])
    fields["steps"] = {k: StepRecord(**v) for k, v in (fields.get("steps") or {}).items()}
    fields["timeline"] = tuple(
        TimelineEvent(**{**e, "kind": EventKind(e["kind"])}) for e in fields.get("timeline") or []
    )
    if fields.get("approval"):
        fields["approval"] = Approval.from_plain(fields["approval"])
    fields["approved_steps"] = tuple(fields.get("approved_steps") or ())
    return Execution(**fields)


def size_of(value: Any) -> int:
    """Rough stored size in bytes (JSON length): enough to decide what to spill."""
    return len(json.dumps(to_plain(value), default=str, separators=(",", ":")))
