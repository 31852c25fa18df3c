"""App Home requests and Events API receipts: two kinds of small, TTL'd items.

A person's home is one item (`HOME#<user>` / `HOME`). The ingress writes it when Slack says they
opened the tab (`app_home_opened`), and the timeline consumer writes it again when a run they can
act on changes; its stream record (`home_status` requested) makes the timeline consumer publish
the home with `views.publish`. Requests coalesce: while one is waiting to be published, another
changes nothing (the publish reads the runs when it happens, so it shows the newer state too); a
refresh is written only for people who opened their home at least once (the item exists).

An event receipt (`EVENT#<event_id>` / `RECEIVED`) is put once per Events API delivery: Slack
retries an event it thinks we missed (same `event_id`, `X-Slack-Retry-Num`), and the conditional
put makes the retry change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.store import keys
from bot.store.client import TableClient
from bot.store.codec import from_attribute

REQUESTED = "requested"
PUBLISHING = "publishing"
PUBLISHED = "published"
FAILED = "failed"
WAITING = "waiting"  # Slack answered 429: in the due-index until its Retry-After, then asked again
OPENED = "opened"  # why a home is published: the person opened it ...
REFRESH = "refresh"  # ... or a run they can act on changed
HOME_KEPT_SECONDS = 30 * 24 * 3600  # a home not opened for 30 days is no longer refreshed
RECEIPT_KEPT_SECONDS = 24 * 3600  # Slack retries an event for minutes; a day is ample
STALE_REQUEST_MS = 60_000  # a request not claimed within a minute is presumed lost: ask again
PUBLISH_LEASE_MS = 30_000  # a consumer that stopped mid-publish is taken over after this


@dataclass(frozen=True)
class HomeRequest:
    user_id: str
    requested_at_ms: int
    reason: str = OPENED
    execution_id: str = ""  # the run whose change asked for a refresh
    status: str = REQUESTED


class HomeStore:
    """App Home publish requests (`HOME#<user>` / `HOME`) and Events API receipts
    (`EVENT#<event_id>`), written by the ingress and the timeline consumer.

    Every method returns its outcome or raises what its docstring names; anything else is the
    table client's error for DynamoDB failing (after the client's retries)."""

    def __init__(self, client: TableClient, table: str) -> None:
        self.client = client
        self.table = table

    def first_delivery(self, event_id: str, now_ms: int) -> bool:
        """Record an Events API delivery; False when `event_id` was delivered before (a retry).
        Raises ValueError for an empty event id (Slack always sends one)."""
        if not event_id:
            raise ValueError("an Events API callback without event_id cannot be deduplicated")
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    **_typed(keys.event_receipt_key(event_id)),
                    "event_id": {"S": event_id[:200]},
                    "received_at_ms": {"N": str(now_ms)},
                    keys.TTL_ATTRIBUTE: {"N": str(now_ms // 1000 + RECEIPT_KEPT_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": keys.PK},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def forget_delivery(self, event_id: str) -> None:
        """Undo `first_delivery` when the event could not be handled, so Slack's retry is."""
        self.client.delete_item(TableName=self.table, Key=_typed(keys.event_receipt_key(event_id)))

    def opened(self, user_id: str, now_ms: int) -> bool:
        """`user_id` opened their home: ask for it to be published. False when a request of theirs
        is already waiting (it will show the same runs)."""
        return self._request(HomeRequest(user_id, now_ms, OPENED), only_known=False)

    def refresh(self, user_id: str, execution_id: str, now_ms: int) -> bool:
        """A run `user_id` can act on changed: republish their home, if they ever opened it and
        no request of theirs is waiting. True when a request was written."""
        return self._request(HomeRequest(user_id, now_ms, REFRESH, execution_id), only_known=True)

    def _request(self, wanted: HomeRequest, *, only_known: bool) -> bool:
        # A request waits already: to be claimed, or for Slack's Retry-After (the sweeper asks
        # again then); either publishes the runs as they are when it happens.
        waiting = (
            "((home_status = :requested AND requested_at_ms >= :stale) OR "
            f"(home_status = :waiting AND {keys.DUE_AT} >= :stale))"
        )
        condition = f"attribute_exists(#pk) AND NOT {waiting}" if only_known else f"NOT {waiting}"
        values: dict[str, Any] = {
            ":requested": {"S": REQUESTED},
            ":waiting": {"S": WAITING},
            ":stale": {"N": str(wanted.requested_at_ms - STALE_REQUEST_MS)},
            ":at": {"N": str(wanted.requested_at_ms)},
            ":user": {"S": wanted.user_id},
            ":reason": {"S": wanted.reason},
            ":run": {"S": wanted.execution_id or "-"},
        }
        update = (
            "SET home_status = :requested, requested_at_ms = :at, user_id = :user, reason = :reason, "
            "execution_id = :run"
        )
        remove = f" REMOVE {keys.DUE_BUCKET}, {keys.DUE_AT}"  # a lost wait leaves the due-index
        if wanted.reason == OPENED:  # the home is kept (and refreshed) while it is being looked at
            update += f", {keys.TTL_ATTRIBUTE} = :expires"
            values[":expires"] = {"N": str(wanted.requested_at_ms // 1000 + HOME_KEPT_SECONDS)}
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": _typed(keys.home_key(wanted.user_id)),
            "UpdateExpression": update + remove,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if only_known:  # DynamoDB refuses a name the expressions do not use
            request["ExpressionAttributeNames"] = {"#pk": keys.PK}
        try:
            self.client.update_item(**request)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim(self, wanted: HomeRequest, now_ms: int) -> str | None:
        """Take the request to publish it: the hash of the home last published (Slack's guard
        against an older view landing last; "" when none is known), or None when another consumer
        has it or it was published already (a redelivered record publishes nothing twice).
        Claimed before the runs are read: a change after this point may ask again, and its
        request is not coalesced into this one."""
        try:
            answer = self.client.update_item(
                TableName=self.table,
                Key=_typed(keys.home_key(wanted.user_id)),
                UpdateExpression="SET home_status = :publishing, lease_until_ms = :lease",
                ConditionExpression=(
                    "requested_at_ms = :at AND (home_status = :requested OR "
                    "(home_status = :publishing AND lease_until_ms < :now))"
                ),
                ExpressionAttributeValues={
                    ":publishing": {"S": PUBLISHING},
                    ":requested": {"S": REQUESTED},
                    ":lease": {"N": str(now_ms + PUBLISH_LEASE_MS)},
                    ":at": {"N": str(wanted.requested_at_ms)},
                    ":now": {"N": str(now_ms)},
                },
                ReturnValues="ALL_NEW",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return str(((answer.get("Attributes") or {}).get("view_hash") or {}).get("S") or "")

    def published(self, user_id: str, view_hash: str) -> None:
        """Keep the hash Slack gave the home just published, whatever became of the request (a
        newer one may have replaced it): the next publish must carry the hash Slack holds now."""
        self.client.update_item(
            TableName=self.table,
            Key=_typed(keys.home_key(user_id)),
            UpdateExpression="SET view_hash = :hash",
            ConditionExpression="attribute_exists(#pk)",
            ExpressionAttributeNames={"#pk": keys.PK},
            ExpressionAttributeValues={":hash": {"S": view_hash[:200]}},
        )

    def defer(self, wanted: HomeRequest, until_ms: int) -> None:
        """Give a claimed request back until `until_ms` (Slack answered 429 with its Retry-After):
        it waits in the due-index, the stream lane moves on, and the sweeper asks again then
        (`wake`). A newer request that replaced it is left alone."""
        self._if_still_publishing(
            wanted,
            f"SET home_status = :waiting, {keys.DUE_BUCKET} = :bucket, {keys.DUE_AT} = :due "
            "REMOVE lease_until_ms",
            {
                ":waiting": {"S": WAITING},
                ":bucket": {"S": keys.due_bucket(keys.home_key(wanted.user_id)[keys.PK])},
                ":due": {"N": str(until_ms)},
            },
        )

    def wake(self, user_id: str, due_at_ms: int, now_ms: int) -> bool:
        """Ask again for a home that waited for Slack (the sweeper, at its due time): a new request,
        whose stream record publishes it. False if it was asked for or published meanwhile."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_typed(keys.home_key(user_id)),
                UpdateExpression=(
                    f"SET home_status = :requested, requested_at_ms = :now REMOVE {keys.DUE_BUCKET}, {keys.DUE_AT}"
                ),
                ConditionExpression=f"home_status = :waiting AND {keys.DUE_AT} = :due",
                ExpressionAttributeValues={
                    ":requested": {"S": REQUESTED},
                    ":waiting": {"S": WAITING},
                    ":now": {"N": str(now_ms)},
                    ":due": {"N": str(due_at_ms)},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release(self, wanted: HomeRequest) -> None:
        """Give a claimed request back (Slack was busy): the record's retry claims it again."""
        self._if_still_publishing(
            wanted, "SET home_status = :requested REMOVE lease_until_ms", {":requested": {"S": REQUESTED}}
        )

    def finish(self, wanted: HomeRequest, status: str, detail: str, now_ms: int) -> None:
        """Record the outcome (published, or failed with Slack's error), unless a newer request
        replaced this one (that one is published on its own record)."""
        self._if_still_publishing(
            wanted,
            "SET home_status = :status, detail = :detail, published_at_ms = :now",
            {":status": {"S": status}, ":detail": {"S": detail[:500]}, ":now": {"N": str(now_ms)}},
        )

    def _if_still_publishing(self, wanted: HomeRequest, update: str, values: dict[str, Any]) -> None:
        """Apply `update` to the home while `wanted` is the request being published; a newer
        request that replaced it is left alone (that one is published on its own record)."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_typed(keys.home_key(wanted.user_id)),
                UpdateExpression=update,
                ConditionExpression="requested_at_ms = :at AND home_status = :publishing",
                ExpressionAttributeValues={
                    **values,
                    ":at": {"N": str(wanted.requested_at_ms)},
                    ":publishing": {"S": PUBLISHING},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass


def requested_home(record: dict[str, Any]) -> HomeRequest | None:
    """The home request a stream record carries, or None for any other record (and for the
    request's own claim and outcome writes). Raises KeyError/ValueError for a HOME item that
    cannot be read (the caller fails the record)."""
    if record.get("eventName") not in {"INSERT", "MODIFY"}:
        return None
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    if (image.get(keys.SK) or {}).get("S") != keys.HOME_SK:
        return None
    if (image.get("home_status") or {}).get("S") != REQUESTED:
        return None
    plain = {k: from_attribute(v) for k, v in image.items()}
    run = str(plain.get("execution_id") or "")
    return HomeRequest(
        user_id=str(plain["user_id"]),
        requested_at_ms=int(plain["requested_at_ms"]),
        reason=str(plain.get("reason") or OPENED),
        execution_id="" if run == "-" else run,
    )


def _typed(key: dict[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"S": v} for k, v in key.items()}
