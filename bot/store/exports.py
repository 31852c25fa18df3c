"""Evidence-file requests: one small item per run (`EXEC#<id>` / `EXPORT`).

`/runbook export` and the *Export evidence* button only write it (the ack path never uploads); its
stream record reaches the timeline consumer (template.yaml's filter: `export_status` requested),
which claims it, uploads the files and records the outcome. The item lives under the run's key,
so it goes when the run's items are purged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.store import keys
from bot.store.client import TableClient
from bot.store.codec import from_attribute

REQUESTED = "requested"
UPLOADING = "uploading"
UPLOADED = "uploaded"
FAILED = "failed"
AGAIN_AFTER_MS = 60_000  # one export per run per minute: a second click within it changes nothing
UPLOAD_LEASE_MS = 120_000  # a consumer that stopped mid-upload is taken over after this


@dataclass(frozen=True)
class ExportRequest:
    execution_id: str
    requested_by: str
    requested_at_ms: int
    channel: str  # where it was asked
    response_url: str = ""  # the command's or click's, for a refusal when the thread is gone
    status: str = REQUESTED
    detail: str = ""


class ExportStore:
    """Evidence-file requests (`EXEC#<id>` / `EXPORT`): asked for by the ingress, taken and
    finished by the timeline consumer.

    Every method returns its outcome or raises what its docstring names; anything else is the
    table client's error for DynamoDB failing (after the client's retries)."""

    def __init__(self, client: TableClient, table: str) -> None:
        self.client = client
        self.table = table

    def request(self, wanted: ExportRequest) -> ExportRequest | None:
        """Ask for the run's evidence file. None when asked; else the standing request (one asked
        less than a minute ago, or one being uploaded now), and nothing was written."""
        item = {
            **_key(wanted.execution_id),
            "execution_id": {"S": wanted.execution_id},
            "requested_by": {"S": wanted.requested_by},
            "requested_at_ms": {"N": str(wanted.requested_at_ms)},
            "channel": {"S": wanted.channel},
            "export_status": {"S": REQUESTED},
        }
        if wanted.response_url:
            item["response_url"] = {"S": wanted.response_url}
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression=(
                    "attribute_not_exists(#pk) OR (requested_at_ms < :again AND "
                    "(export_status <> :uploading OR lease_until_ms < :now))"
                ),
                ExpressionAttributeNames={"#pk": keys.PK},
                ExpressionAttributeValues={
                    ":again": {"N": str(wanted.requested_at_ms - AGAIN_AFTER_MS)},
                    ":uploading": {"S": UPLOADING},
                    ":now": {"N": str(wanted.requested_at_ms)},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return self.get(wanted.execution_id) or wanted
        return None

    def get(self, execution_id: str) -> ExportRequest | None:
        """The run's evidence-file request (consistent read), or None when none was asked for."""
        item = self.client.get_item(TableName=self.table, Key=_key(execution_id), ConsistentRead=True).get(
            "Item"
        )
        return from_image(item) if item else None

    def claim(self, wanted: ExportRequest, now_ms: int) -> bool:
        """Take the request to upload it; False if another consumer has it, it is done, or a newer
        request replaced it (a redelivered record uploads nothing twice)."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_key(wanted.execution_id),
                UpdateExpression="SET export_status = :uploading, lease_until_ms = :lease",
                ConditionExpression=(
                    "requested_at_ms = :at AND (export_status = :requested OR "
                    "(export_status = :uploading AND lease_until_ms < :now))"
                ),
                ExpressionAttributeValues={
                    ":uploading": {"S": UPLOADING},
                    ":requested": {"S": REQUESTED},
                    ":lease": {"N": str(now_ms + UPLOAD_LEASE_MS)},
                    ":at": {"N": str(wanted.requested_at_ms)},
                    ":now": {"N": str(now_ms)},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def finish(self, wanted: ExportRequest, status: str, detail: str, now_ms: int) -> None:
        """Record what became of the request (uploaded: the file ids; failed: Slack's error)."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_key(wanted.execution_id),
                UpdateExpression="SET export_status = :status, detail = :detail, finished_at_ms = :now",
                ConditionExpression="requested_at_ms = :at",
                ExpressionAttributeValues={
                    ":status": {"S": status},
                    ":detail": {"S": detail[:1000]},
                    ":now": {"N": str(now_ms)},
                    ":at": {"N": str(wanted.requested_at_ms)},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # a newer request replaced it: that one records its own outcome


def from_image(image: dict[str, Any]) -> ExportRequest:
    plain = {k: from_attribute(v) for k, v in image.items()}
    return ExportRequest(
        execution_id=str(plain["execution_id"]),
        requested_by=str(plain.get("requested_by") or ""),
        requested_at_ms=int(plain["requested_at_ms"]),
        channel=str(plain.get("channel") or ""),
        response_url=str(plain.get("response_url") or ""),
        status=str(plain.get("export_status") or REQUESTED),
        detail=str(plain.get("detail") or ""),
    )


def requested_export(record: dict[str, Any]) -> ExportRequest | None:
    """The export request a stream record carries, or None for any other record. Raises
    KeyError/ValueError for an EXPORT item that cannot be read (the caller fails the record)."""
    if record.get("eventName") not in {"INSERT", "MODIFY"}:
        return None
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    if (image.get(keys.SK) or {}).get("S") != keys.EXPORT_SK:
        return None
    if (image.get("export_status") or {}).get("S") != REQUESTED:
        return None  # its own claim and outcome writes
    return from_image(image)


def _key(execution_id: str) -> dict[str, dict[str, str]]:
    return {k: {"S": v} for k, v in keys.export_key(execution_id).items()}
