"""Execution <-> DynamoDB item (the low-level attribute-value format of streams and the client)."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from bot.store import keys
from bot.store.model import Approval, EventKind, Execution, Status, StepRecord, TimelineEvent

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# Attributes that live on the state item but are not Execution fields.
_STORAGE_ONLY = {keys.PK, keys.SK, keys.DUE_BUCKET}


def to_attribute(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value (floats become exact decimals)."""
    serialized: dict[str, Any] = _serializer.serialize(_to_dynamo(value))  # type: ignore[assignment]
    return serialized


def from_attribute(value: dict[str, Any]) -> Any:
    return _from_dynamo(_deserializer.deserialize(_normalize(value)))  # type: ignore[arg-type]


def _normalize(value: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB Local's stream records show an empty map as `{}`, not `{"M": {}}`: read both."""
    if not value:
        return {"M": {}}
    if "M" in value:
        return {"M": {k: _normalize(v) for k, v in value["M"].items()}}
    if "L" in value:
        return {"L": [_normalize(v) for v in value["L"]]}
    return value


def to_item(ex: Execution) -> dict[str, Any]:
    """The full state item for a new execution."""
    plain = plain_fields(ex)
    item = {k: to_attribute(v) for k, v in plain.items() if v is not None}
    item.update({k: {"S": v} for k, v in keys.state_key(ex.execution_id).items()})
    if ex.due_at_ms is not None:
        item[keys.DUE_BUCKET] = {"S": keys.DUE_BUCKET_VALUE}
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
        fields["approval"] = Approval(**fields["approval"])
    fields["approved_steps"] = tuple(fields.get("approved_steps") or ())
    return Execution(**fields)


def size_of(value: Any) -> int:
    """Rough stored size in bytes (JSON length): enough to decide what to spill."""
    return len(json.dumps(to_plain(value), default=str, separators=(",", ":")))


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    if isinstance(value, set | frozenset):
        return [_to_dynamo(v) for v in sorted(value, key=str)]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return sorted(_from_dynamo(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value
