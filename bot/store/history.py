"""Past runs, newest first, from the sparse `history-index` GSI (never a scan).

One index serves two audiences through an overloaded partition key: a partner's runs are their
state items (`PARTNER#<partner>`, projected with what a history line shows), a person's runs are
one small item per run (`REQUESTER#<user>`, pointing at the run). The sort key is the start time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.store import keys
from bot.store.client import TableClient
from bot.store.codec import from_attribute
from bot.store.model import Status

QUERY_PAGE = 50  # items DynamoDB reads per Query (before the filter)
MAX_QUERIES = 4  # Queries per page of history: an answer stays well inside Slack's 3 seconds
CURSOR = re.compile(r"(\d{1,15})\.(rb-[a-z2-7]{10})")
# What a history line shows: the history-index projects exactly these (template.yaml INCLUDE).
PROJECTED = (
    "execution_id",
    "runbook",
    "partner",
    "status",
    "requested_by",
    "created_at_ms",
    "updated_at_ms",
    "drill",
    "kind",
    "channel",
    "error",
    keys.APPROVED_BY,
)


class BadCursor(ValueError):
    """A history cursor that is not one this module wrote."""


@dataclass(frozen=True)
class RunSummary:
    """One line of history."""

    execution_id: str
    runbook: str
    partner: str
    status: Status
    requested_by: str
    created_at_ms: int
    updated_at_ms: int
    drill: bool = False
    kind: str = "run"  # run | plan
    channel: str = ""
    error_code: str = ""
    approved_by: tuple[str, ...] = ()

    @property
    def duration_ms(self) -> int:
        """How long it ran (ended runs) or has been running so far (active runs, as of its last change)."""
        return max(0, self.updated_at_ms - self.created_at_ms)


@dataclass(frozen=True)
class HistoryFilter:
    """Which runs of a partner: since when, of which runbook, in which states; `channel` keeps runs
    started in one channel (a partner without channels of its own), `requested_by` one person's."""

    partner: str
    since_ms: int
    runbook: str | None = None
    statuses: frozenset[Status] = frozenset()
    channel: str | None = None
    requested_by: str | None = None


@dataclass(frozen=True)
class HistoryPage:
    runs: tuple[RunSummary, ...]
    cursor: str = ""  # where the next page starts; "" when nothing is left


class HistoryStore:
    """Reads of history-index: a partner's runs and a person's recent runs.

    Every method returns its outcome or raises what its docstring names; anything else is the
    table client's error for DynamoDB failing (after the client's retries)."""

    def __init__(self, client: TableClient, table: str) -> None:
        self.client = client
        self.table = table

    def partner_runs(self, wanted: HistoryFilter, limit: int = 10, cursor: str = "") -> HistoryPage:
        """The partner's runs that match, newest first, `limit` at most; raises BadCursor."""
        names = {"#hpk": keys.HISTORY_PK, "#hat": keys.HISTORY_AT}
        values: dict[str, Any] = {
            ":hpk": {"S": keys.partner_history(wanted.partner)},
            ":since": {"N": str(wanted.since_ms)},
        }
        filters: list[str] = []
        if wanted.runbook:
            names["#runbook"] = "runbook"
            values[":runbook"] = {"S": wanted.runbook}
            filters.append("#runbook = :runbook")
        if wanted.statuses:
            names["#status"] = "status"
            ordered = sorted(s.value for s in wanted.statuses)
            values.update({f":st{i}": {"S": s} for i, s in enumerate(ordered)})
            filters.append(f"#status IN ({', '.join(f':st{i}' for i in range(len(ordered)))})")
        if wanted.channel:
            names["#channel"] = "channel"
            values[":channel"] = {"S": wanted.channel}
            filters.append("#channel = :channel")
        if wanted.requested_by:
            names["#by"] = "requested_by"
            values[":by"] = {"S": wanted.requested_by}
            filters.append("#by = :by")
        request: dict[str, Any] = {
            "KeyConditionExpression": "#hpk = :hpk AND #hat >= :since",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        items, next_cursor = self._newest_first(
            request, keys.partner_history(wanted.partner), keys.STATE_SK, limit, cursor
        )
        return HistoryPage(tuple(summary(item) for item in items), next_cursor)

    def requester_runs(self, user_id: str, since_ms: int, limit: int = 10, cursor: str = "") -> HistoryPage:
        """The runs `user_id` started, newest first (App Home's recent runs); raises BadCursor.
        Each index item points at its run, read with one GetItem each (a page is a few runs)."""
        request: dict[str, Any] = {
            "KeyConditionExpression": "#hpk = :hpk AND #hat >= :since",
            "ExpressionAttributeNames": {"#hpk": keys.HISTORY_PK, "#hat": keys.HISTORY_AT},
            "ExpressionAttributeValues": {
                ":hpk": {"S": keys.requester_history(user_id)},
                ":since": {"N": str(since_ms)},
            },
        }
        items, next_cursor = self._newest_first(
            request, keys.requester_history(user_id), keys.REQUESTER_SK, limit, cursor
        )
        runs = []
        for item in items:
            state = self.client.get_item(
                TableName=self.table,
                Key={k: {"S": v} for k, v in keys.state_key(item["execution_id"]["S"]).items()},
                ProjectionExpression=", ".join(f"#p{i}" for i in range(len(PROJECTED))),
                ExpressionAttributeNames={f"#p{i}": name for i, name in enumerate(PROJECTED)},
            ).get("Item")
            if state:  # gone: the run expired and its items are being purged
                runs.append(summary(state))
        return HistoryPage(tuple(runs), next_cursor)

    def _newest_first(
        self, request: dict[str, Any], partition: str, sk: str, limit: int, cursor: str
    ) -> tuple[list[dict[str, Any]], str]:
        """Up to `limit` matching items and the cursor after the last one; a filter that matches
        little is read for at most MAX_QUERIES pages, then the cursor says where to go on."""
        request = {
            **request,
            "TableName": self.table,
            "IndexName": keys.HISTORY_INDEX,
            "ScanIndexForward": False,
            "Limit": QUERY_PAGE,
        }
        if cursor:
            request["ExclusiveStartKey"] = start_key(cursor, partition, sk)
        found: list[dict[str, Any]] = []
        for _ in range(MAX_QUERIES):
            page = self.client.query(**request)
            for item in page.get("Items", []):
                found.append(item)
                if len(found) == limit:
                    return found, encode_cursor(item)
            last = page.get("LastEvaluatedKey")
            if not last:
                return found, ""
            request["ExclusiveStartKey"] = last
        return found, encode_cursor(request["ExclusiveStartKey"])


def summary(item: dict[str, Any]) -> RunSummary:
    plain = {k: from_attribute(v) for k, v in item.items()}
    error = plain.get("error") or {}
    return RunSummary(
        execution_id=str(plain.get("execution_id") or ""),
        runbook=str(plain.get("runbook") or ""),
        partner=str(plain.get("partner") or ""),
        status=Status(plain["status"]),
        requested_by=str(plain.get("requested_by") or ""),
        created_at_ms=int(plain.get("created_at_ms") or 0),
        updated_at_ms=int(plain.get("updated_at_ms") or plain.get("created_at_ms") or 0),
        drill=bool(plain.get("drill")),
        kind=str(plain.get("kind") or "run"),
        channel=str(plain.get("channel") or ""),
        error_code=str(error.get("code") or "") if isinstance(error, dict) else "",
        approved_by=tuple(sorted(plain.get(keys.APPROVED_BY) or ())),
    )


def encode_cursor(item: dict[str, Any]) -> str:
    """`<start ms>.<execution id>`: short enough for a button's value, and nothing a clicker could
    point at another partition (the partition comes from the re-checked filter, never the cursor)."""
    return f"{item[keys.HISTORY_AT]['N']}.{keys.execution_id_of(item[keys.PK]['S'])}"


def start_key(cursor: str, partition: str, sk: str) -> dict[str, Any]:
    match = CURSOR.fullmatch(cursor)
    if not match:
        raise BadCursor(f"{cursor[:40]!r} is not a history cursor")
    at_ms, execution_id = match.groups()
    return {
        keys.PK: {"S": keys.execution_pk(execution_id)},
        keys.SK: {"S": sk},
        keys.HISTORY_PK: {"S": partition},
        keys.HISTORY_AT: {"N": at_ms},
    }
