"""Reading the executions table's stream records (Lambda's DynamoDB event format)."""

from __future__ import annotations

from typing import Any

from bot.store import keys
from bot.store.codec import from_item
from bot.store.model import Execution


class BadRecord(ValueError):
    """A stream record we own but cannot read; it is failed so it ends in the on-failure queue."""


def state_image(record: dict[str, Any]) -> Execution | None:
    """The execution in a record's NewImage, or None for records of other items and deletes."""
    if record.get("eventName") not in {"INSERT", "MODIFY"}:
        return None
    ddb = record.get("dynamodb") or {}
    image = ddb.get("NewImage")
    if not image:
        keys_ = ddb.get("Keys") or {}
        if (keys_.get(keys.SK) or {}).get("S") == keys.STATE_SK:
            raise BadRecord(
                "state record without NewImage: the table's stream must use NEW_AND_OLD_IMAGES "
                f"(record {record.get('eventID')})"
            )
        return None
    if (image.get(keys.SK) or {}).get("S") != keys.STATE_SK:
        return None
    try:
        return from_item(image)
    except (KeyError, TypeError, ValueError) as error:
        raise BadRecord(
            f"state record {record.get('eventID')} for {image.get(keys.PK)} cannot be read as an execution: "
            f"{type(error).__name__}: {error}. It needs execution_id, runbook, partner, status, version and "
            "the other fields of bot.store.model.Execution"
        ) from error


def old_state(record: dict[str, Any]) -> Execution | None:
    """The execution as it was before a MODIFY (OldImage), or None (an INSERT, another item, or an
    old image that cannot be read: a home refresh is then judged on the new image alone)."""
    image = (record.get("dynamodb") or {}).get("OldImage")
    if not image or (image.get(keys.SK) or {}).get("S") != keys.STATE_SK:
        return None
    try:
        return from_item(image)
    except (KeyError, TypeError, ValueError):
        return None


def record_age_ms(record: dict[str, Any], now_s: float) -> float | None:
    """How long ago the stream took the record (ApproximateCreationDateTime), or None if unknown."""
    created_s = (record.get("dynamodb") or {}).get("ApproximateCreationDateTime")
    return None if created_s is None else max(0.0, (now_s - float(created_s)) * 1000)


TTL_PRINCIPAL = "dynamodb.amazonaws.com"


def expired_state(record: dict[str, Any]) -> Execution | None:
    """The execution whose state item DynamoDB's TTL just removed (a REMOVE record by the service,
    with the item in OldImage), or None for any other record: a delete by anyone else is not ours."""
    identity = record.get("userIdentity") or {}
    if record.get("eventName") != "REMOVE" or identity.get("type") != "Service":
        return None
    if identity.get("principalId") != TTL_PRINCIPAL:
        return None
    ddb = record.get("dynamodb") or {}
    image = ddb.get("OldImage")
    if not image or (image.get(keys.SK) or {}).get("S") != keys.STATE_SK:
        return None
    try:
        return from_item(image)
    except (KeyError, TypeError, ValueError) as error:
        raise BadRecord(
            f"expired state record {record.get('eventID')} for {image.get(keys.PK)} cannot be read: {error}"
        ) from error
