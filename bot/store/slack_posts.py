"""The timeline publisher's own item per execution: what is already in the channel."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bot.store import keys
from bot.store.codec import from_attribute, to_attribute


@dataclass(frozen=True)
class Posts:
    """`posted_seq`: every event up to it is in the thread. `attempting_through`: events up to it
    may have been posted by a publisher that stopped before recording them (look before posting)."""

    channel: str = ""
    parent_ts: str = ""
    parent_attempted: bool = False
    posted_seq: int = 0
    attempting_through: int = 0
    approval_ts: dict[str, str] = field(default_factory=dict)
    parent_digest: str = ""
    exists: bool = False


class PostsStore:
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def get(self, execution_id: str) -> Posts:
        item = self.client.get_item(TableName=self.table, Key=_key(execution_id), ConsistentRead=True).get(
            "Item"
        )
        if not item:
            return Posts()
        data = {k: from_attribute(v) for k, v in item.items() if k not in {keys.PK, keys.SK}}
        return Posts(
            channel=str(data.get("channel", "")),
            parent_ts=str(data.get("parent_ts", "")),
            parent_attempted=bool(data.get("parent_attempted", False)),
            posted_seq=int(data.get("posted_seq", 0)),
            attempting_through=int(data.get("attempting_through", 0)),
            approval_ts=dict(data.get("approval_ts") or {}),
            parent_digest=str(data.get("parent_digest", "")),
            exists=True,
        )

    def save(self, execution_id: str, before: Posts, after: Posts) -> Posts | None:
        """Write `after` if the item is still as `before` was read; None if another publisher moved it."""
        item = {
            **_key(execution_id),
            "channel": {"S": after.channel},
            "parent_ts": {"S": after.parent_ts},
            "parent_attempted": {"BOOL": after.parent_attempted},
            "posted_seq": {"N": str(after.posted_seq)},
            "attempting_through": {"N": str(after.attempting_through)},
            "approval_ts": to_attribute(after.approval_ts),
            "parent_digest": {"S": after.parent_digest},
        }
        if before.exists:
            condition = "posted_seq = :seq AND attempting_through = :through AND parent_ts = :parent"
            values = {
                ":seq": {"N": str(before.posted_seq)},
                ":through": {"N": str(before.attempting_through)},
                ":parent": {"S": before.parent_ts},
            }
            extra: dict[str, Any] = {"ExpressionAttributeValues": values}
        else:
            condition, extra = "attribute_not_exists(#pk)", {"ExpressionAttributeNames": {"#pk": keys.PK}}
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression=condition, **extra)
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return replace(after, exists=True)


def _key(execution_id: str) -> dict[str, dict[str, str]]:
    return {k: {"S": v} for k, v in keys.slack_key(execution_id).items()}
