"""The timeline publisher's own item per execution: what is already in the channel."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bot.store import keys
from bot.store.client import TableClient
from bot.store.codec import from_attribute, to_attribute


@dataclass(frozen=True)
class Posts:
    """`posted_seq`: every event up to it is in the thread, the last one at `last_ts`.
    `attempting_through`: events up to it may have been posted by a publisher that stopped (or
    lost Slack's answer) before recording them: look in the thread after `last_ts` before posting.
    `parent_attempt_at_ms`: when the parent was last sent, to look for it in a narrow window.
    `unreachable`: why the channel refused the last post (a Slack error code), "" when it took it;
    `requester_told`: the requester has been told how to fix it (once per run).
    `paced_until_ms`: the run's turn in its channel's queue (`ChannelPace`): no call to Slack
    before then; once it has come (and until the events are posted), the run goes ahead of the
    runs queued after it.
    `retry_at_ms`: events are still waiting (paced, or the channel unreachable): the sweeper
    nudges the run then (the item sits in the due-index until the publisher catches up)."""

    channel: str = ""
    parent_ts: str = ""
    parent_attempted: bool = False
    parent_attempt_at_ms: int = 0
    posted_seq: int = 0
    attempting_through: int = 0
    last_ts: str = ""
    approval_ts: dict[str, str] = field(default_factory=dict)
    parent_digest: str = ""
    unreachable: str = ""
    unreachable_since_ms: int = 0
    requester_told: bool = False
    paced_until_ms: int = 0
    retry_at_ms: int = 0
    seen_version: int = (
        0  # the newest state published from: an older record (a late duplicate) changes nothing
    )
    exists: bool = False


@dataclass(frozen=True)
class ChannelPace:
    """A channel's turn in Slack (`CHANNEL#<id>` / `PACE`), shared by every run posting there.
    `paced_until_ms`: Slack answered 429 (its Retry-After): nobody calls before then.
    `next_turn_ms`: the end of the channel's queue: a run whose events must wait takes its turn
    from here, `posts` × the post interval long; a run finding it past posts at once."""

    paced_until_ms: int = 0
    next_turn_ms: int = 0
    exists: bool = False


TURN_ATTEMPTS = 8  # takers racing for one channel's queue: after this many, share a turn (a 429 re-queues)
PACE_TTL_SECONDS = 86_400


class PostsStore:
    """What the publisher posted for each run (`EXEC#<id>` / `SLACK`) and the channels that
    refused the bot.

    Every method returns its outcome or raises what its docstring names; anything else is the
    table client's error for DynamoDB failing (after the client's retries)."""

    def __init__(self, client: TableClient, table: str) -> None:
        self.client = client
        self.table = table

    def get(self, execution_id: str) -> Posts:
        """What was posted for the run (consistent read); empty `Posts` before its first post."""
        item = self.client.get_item(TableName=self.table, Key=_key(execution_id), ConsistentRead=True).get(
            "Item"
        )
        if not item:
            return Posts()
        data = {
            k: from_attribute(v)
            for k, v in item.items()
            if k not in {keys.PK, keys.SK, keys.DUE_BUCKET, keys.DUE_AT}
        }
        return Posts(
            channel=str(data.get("channel", "")),
            parent_ts=str(data.get("parent_ts", "")),
            parent_attempted=bool(data.get("parent_attempted", False)),
            parent_attempt_at_ms=int(data.get("parent_attempt_at_ms", 0)),
            posted_seq=int(data.get("posted_seq", 0)),
            attempting_through=int(data.get("attempting_through", 0)),
            last_ts=str(data.get("last_ts", "")),
            approval_ts=dict(data.get("approval_ts") or {}),
            parent_digest=str(data.get("parent_digest", "")),
            unreachable=str(data.get("unreachable", "")),
            unreachable_since_ms=int(data.get("unreachable_since_ms", 0)),
            requester_told=bool(data.get("requester_told", False)),
            paced_until_ms=int(data.get("paced_until_ms", 0)),
            retry_at_ms=int(data.get("retry_at_ms", 0)),
            seen_version=int(data.get("seen_version", 0)),
            exists=True,
        )

    def save(self, execution_id: str, before: Posts, after: Posts) -> Posts | None:
        """Write `after` if the item is still as `before` was read; None if another publisher moved it."""
        item = {
            **_key(execution_id),
            "channel": {"S": after.channel},
            "parent_ts": {"S": after.parent_ts},
            "parent_attempted": {"BOOL": after.parent_attempted},
            "parent_attempt_at_ms": {"N": str(after.parent_attempt_at_ms)},
            "posted_seq": {"N": str(after.posted_seq)},
            "attempting_through": {"N": str(after.attempting_through)},
            "last_ts": {"S": after.last_ts},
            "approval_ts": to_attribute(after.approval_ts),
            "parent_digest": {"S": after.parent_digest},
            "unreachable": {"S": after.unreachable},
            "unreachable_since_ms": {"N": str(after.unreachable_since_ms)},
            "requester_told": {"BOOL": after.requester_told},
            "paced_until_ms": {"N": str(after.paced_until_ms)},
            "retry_at_ms": {"N": str(after.retry_at_ms)},
            "seen_version": {"N": str(after.seen_version)},
        }
        if after.retry_at_ms:  # in the sparse due-index until nothing waits: the sweeper nudges
            item[keys.DUE_BUCKET] = {"S": keys.due_bucket(execution_id)}
            item[keys.DUE_AT] = {"N": str(after.retry_at_ms)}
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

    def mark_channel(self, channel: str, code: str, now_ms: int) -> None:
        """Remember that `channel` refused the bot (`code`), so `/runbook` there can say how to fix it."""
        self.client.put_item(
            TableName=self.table,
            Item={
                **{k: {"S": v} for k, v in keys.channel_key(channel).items()},
                "code": {"S": code},
                "since_ms": {"N": str(now_ms)},
                keys.TTL_ATTRIBUTE: {"N": str(now_ms // 1000 + 7 * 86_400)},
            },
        )

    def pace(self, channel: str) -> ChannelPace:
        """The channel's turn in Slack (consistent read); an empty `ChannelPace` if nobody queued."""
        item = self.client.get_item(TableName=self.table, Key=_pace_key(channel), ConsistentRead=True).get(
            "Item"
        )
        if not item:
            return ChannelPace()
        return ChannelPace(
            paced_until_ms=int(item.get("paced_until_ms", {}).get("N", "0")),
            next_turn_ms=int(item.get("next_turn_ms", {}).get("N", "0")),
            exists=True,
        )

    def take_turn(
        self,
        channel: str,
        now_ms: int,
        posts: int,
        interval_ms: int,
        *,
        paced_until_ms: int = 0,
        pace: ChannelPace | None = None,
    ) -> int:
        """Queue `posts` posts in `channel` at the end of its queue, `interval_ms` apart; when Slack
        said wait (a 429), `paced_until_ms` is its Retry-After. Returns when the turn begins.

        A conditional write on the queue's end, so runs racing for the channel take turns one
        after another. After `TURN_ATTEMPTS` lost races the turn is shared: at worst Slack answers
        429 and that run queues again; nothing is lost. `pace`: the channel's, if just read."""
        pace = pace or self.pace(channel)
        for _ in range(TURN_ATTEMPTS):
            paced = max(pace.paced_until_ms, paced_until_ms)
            start = max(now_ms, pace.next_turn_ms, paced)
            end = start + max(0, posts) * interval_ms
            item = {
                **_pace_key(channel),
                "paced_until_ms": {"N": str(paced)},
                "next_turn_ms": {"N": str(end)},
                keys.TTL_ATTRIBUTE: {"N": str(max(end, paced) // 1000 + PACE_TTL_SECONDS)},
            }
            if pace.exists:
                condition: dict[str, Any] = {
                    "ConditionExpression": "next_turn_ms = :end AND paced_until_ms = :paced",
                    "ExpressionAttributeValues": {
                        ":end": {"N": str(pace.next_turn_ms)},
                        ":paced": {"N": str(pace.paced_until_ms)},
                    },
                }
            else:
                condition = {
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": keys.PK},
                }
            try:
                self.client.put_item(TableName=self.table, Item=item, **condition)
                return start
            except self.client.exceptions.ConditionalCheckFailedException:
                pace = self.pace(channel)
        return max(now_ms, pace.next_turn_ms, pace.paced_until_ms, paced_until_ms)

    def clear_channel(self, channel: str) -> None:
        """Forget that `channel` refused the bot (it posted there again); nothing if it had not."""
        self.client.delete_item(
            TableName=self.table, Key={k: {"S": v} for k, v in keys.channel_key(channel).items()}
        )


def _pace_key(channel: str) -> dict[str, dict[str, str]]:
    return {k: {"S": v} for k, v in keys.channel_pace_key(channel).items()}


def _key(execution_id: str) -> dict[str, dict[str, str]]:
    return {k: {"S": v} for k, v in keys.slack_key(execution_id).items()}
