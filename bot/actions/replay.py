"""Replays of missed writes, and hot-key detection from the same failed-request store.

A missed write is a record in the partner's failed-request store (a table or an SQS queue) that
holds the item to write and its `version`. The replay writes it to the target table with a
condition (`attribute_not_exists(pk) OR version < :v`) so a write that already landed, or a
replay run twice, is skipped as a duplicate, never applied twice. It paces itself inside a
capacity budget (a share of the table's provisioned WCU) with additive-increase /
multiplicative-decrease on throttling, and checkpoints its cursor after every page so a resume
redoes at most one page.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.actions.base import ActionContext, Effect, StepOutcome, register
from bot.actions.dynamodb import capacity_of, describe_table, plain
from bot.actions.guard import guard_tripped
from bot.exceptions import ActionError

PAGE = 25
PEEK_SECONDS = 30  # how long a read-only sample hides the SQS messages it read, at most
WORKERS = 8  # parallel writers: one writer cannot reach a few hundred WCU at real request latency
THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


def store_records(
    ctx: ActionContext, cursor: Any, limit: int, *, peek: bool = False
) -> tuple[list[dict[str, Any]], Any]:
    """One page of missed writes: ([{'item': {...attribute values}, 'version': n, 'id': ...}], next cursor).

    `peek` hides what it reads for a short while only (so the next page brings new messages);
    the reader gives them back at once with `release_peeked`, so a read-only step never keeps
    missed writes from a replay that follows it."""
    store = ctx.partner.failed_requests
    if store is None:
        raise ActionError(
            "InvalidInput",
            f"{ctx.partner.name} has no failed_requests store in its partner file",
            retryable=False,
        )
    if store.kind == "sqs":
        sqs = ctx.aws.client("sqs")
        url = sqs.get_queue_url(QueueName=store.name)["QueueUrl"]
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(limit, 10),
            WaitTimeSeconds=0,
            VisibilityTimeout=PEEK_SECONDS if peek else 300,
        ).get("Messages", [])
        records = [{**json.loads(m["Body"]), "receipt": m["ReceiptHandle"], "queue": url} for m in messages]
        return records, ("more" if messages else None)
    page = ctx.aws.client("dynamodb").scan(
        TableName=store.name, Limit=limit, **({"ExclusiveStartKey": cursor} if cursor else {})
    )
    records = [
        {"item": r["item"]["M"], "version": int(r["version"]["N"]), "id": r["request_id"]["S"]}
        for r in page.get("Items", [])
    ]
    return records, page.get("LastEvaluatedKey")


def release_peeked(ctx: ActionContext, records: list[dict[str, Any]]) -> None:
    """Make peeked SQS messages visible again now, ten at a time (SQS's batch limit)."""
    peeked = [r for r in records if "receipt" in r]
    sqs = ctx.aws.client("sqs") if peeked else None
    for start in range(0, len(peeked), 10):
        batch = peeked[start : start + 10]
        sqs.change_message_visibility_batch(  # type: ignore[union-attr]
            QueueUrl=batch[0]["queue"],
            Entries=[
                {"Id": str(i), "ReceiptHandle": r["receipt"], "VisibilityTimeout": 0}
                for i, r in enumerate(batch)
            ],
        )


class _Pace:
    """One token bucket for all of a replay's writers: never above the budget; additive increase
    per success, multiplicative decrease per throttle (AIMD)."""

    def __init__(self, rate: float, budget: float, ctx: ActionContext) -> None:
        self.rate = min(rate, budget)
        self.budget = budget
        self.ctx = ctx
        self.tokens = 0.0
        self.last = ctx.clock()
        self.throttles = 0
        self.lock = threading.Lock()

    def acquire(self) -> None:
        with self.lock:
            now = self.ctx.clock()
            self.tokens = min(self.rate / 10, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= 1
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait:
            self.ctx.sleep(wait)

    def succeeded(self) -> None:
        with self.lock:
            self.rate = min(self.budget, self.rate + self.budget * 0.002)

    def throttled(self) -> None:
        with self.lock:
            self.throttles += 1
            self.rate = max(1.0, self.rate * 0.7)

    def take_throttled(self) -> int:
        with self.lock:
            count, self.throttles = self.throttles, 0
            return count


class Replay:
    name = "dynamodb.replay"
    resumable = True
    guardable = True  # checks its guard alarms before every page (bot/actions/guard.py)
    outputs: tuple[str, ...] = (
        "applied",
        "skipped_duplicates",
        "failed",
        "throttled",
        "budget_wcu",
        "items_per_second",
    )
    always_high_risk = True
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["table"],
        "additionalProperties": False,
        "properties": {
            "table": {"type": "string", "description": "target table name"},
            "budget_share": {
                "type": ["number", "string"],
                "description": "share of provisioned WCU (default: partner's)",
            },
            "on_demand_rate": {
                "type": "integer",
                "minimum": 1,
                "description": "writes/s when the table is on-demand",
            },
            "version_attribute": {"type": "string"},
            "checkpoint_every_pages": {"type": "integer", "minimum": 1},
            "concurrency": {
                "type": "integer",
                "minimum": 1,
                "maximum": 64,
                "description": "parallel writers",
            },
        },
    }

    def budget(self, ctx: ActionContext, inputs: dict[str, Any]) -> float:
        mode, _, write_units = capacity_of(describe_table(ctx, inputs["table"]))
        # The partner's share is a ceiling: a runbook or a person may ask for less, never more.
        ceiling = ctx.partner.capacity.replay_budget_share
        share = min(float(inputs.get("budget_share") or ceiling), ceiling)
        if mode == "PAY_PER_REQUEST" or not write_units:
            return float(inputs.get("on_demand_rate") or 200)
        return max(1.0, write_units * share)

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        table = describe_table(ctx, inputs["table"])
        key_names = [k["AttributeName"] for k in table["KeySchema"]]
        version_attr = inputs.get("version_attribute", "version")
        budget = self.budget(ctx, inputs)
        s = dict(
            ctx.checkpoint
            or {
                "cursor": None,
                "applied": 0,
                "skipped": 0,
                "failed": 0,
                "throttled": 0,
                "rate": budget,
                "started": ctx.clock(),
                "done": False,
            }
        )
        client = ctx.aws.client("dynamodb")
        pace = _Pace(s["rate"], budget, ctx)
        every = int(inputs.get("checkpoint_every_pages", 4))
        workers = int(inputs.get("concurrency", WORKERS))
        pages = 0

        def replay_one(record: dict[str, Any]) -> str:
            rng = random.Random(f"{ctx.idempotency_key}#{record.get('id', '')}")
            for attempt in range(1, 9):
                pace.acquire()
                outcome = self._write(client, inputs["table"], record, key_names, version_attr)
                if outcome == "ConnectionError":
                    ctx.sleep(rng.uniform(0, min(2.0, 0.05 * 2**attempt)))
                    continue
                if outcome not in THROTTLED:
                    pace.succeeded()
                    if "receipt" in record and outcome in {"applied", "duplicate"}:
                        ctx.aws.client("sqs").delete_message(
                            QueueUrl=record["queue"], ReceiptHandle=record["receipt"]
                        )
                    return outcome
                pace.throttled()
                ctx.sleep(rng.uniform(0, min(2.0, 0.05 * 2**attempt)))
            return "failed"

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replay") as pool:
            while True:
                # A safe point: nothing of the next page is written yet, and the cursor is saved.
                tripped = guard_tripped(ctx)
                if tripped is not None:
                    done = s["applied"] + s["skipped"] + s["failed"]
                    return StepOutcome.pause(s, tripped, f"paused after {done:,} missed writes")
                records, following = store_records(ctx, s["cursor"], PAGE)
                # A page is finished as a whole before its cursor is saved: a resume redoes at most it.
                for outcome in pool.map(replay_one, records):
                    key = {"applied": "applied", "duplicate": "skipped"}.get(outcome, "failed")
                    s[key] += 1
                s["throttled"] += pace.take_throttled()
                s["rate"] = pace.rate
                s["cursor"] = following
                pages += 1
                if not following:
                    break
                ctx.save_progress(s)
                if pages >= every or ctx.should_checkpoint():
                    done = s["applied"] + s["skipped"] + s["failed"]
                    return StepOutcome.resume_later(s, f"replayed {done:,} missed writes so far")
        elapsed = max(1e-6, ctx.clock() - s["started"])
        total = s["applied"] + s["skipped"] + s["failed"]
        outputs = {
            "applied": s["applied"],
            "skipped_duplicates": s["skipped"],
            "failed": s["failed"],
            "throttled": s["throttled"],
            "budget_wcu": round(budget, 1),
            "items_per_second": round(total / elapsed, 1),
        }
        if s["failed"]:
            raise ActionError(
                "ReplayIncomplete",
                f"{s['failed']} of {total} missed writes failed after retries; "
                f"{s['applied']} applied, {s['skipped']} were already there",
                retryable=True,
            )
        return StepOutcome.done(
            f"replayed {total:,} missed writes into {inputs['table']}: {s['applied']:,} applied, "
            f"{s['skipped']:,} already there",
            outputs,
            applied=s["applied"],
            skipped=s["skipped"],
            throttled=s["throttled"],
            budget_wcu=round(budget, 1),
        )

    @staticmethod
    def _write(
        client: Any, table: str, record: dict[str, Any], key_names: list[str], version_attr: str
    ) -> str:
        item = dict(record["item"])
        item[version_attr] = {"N": str(record["version"])}
        try:
            client.put_item(
                TableName=table,
                Item=item,
                ConditionExpression="attribute_not_exists(#k) OR #v < :v",
                ExpressionAttributeNames={"#k": key_names[0], "#v": version_attr},
                ExpressionAttributeValues={":v": {"N": str(record["version"])}},
            )
        except Exception as error:
            from botocore.exceptions import ConnectionError as BotoConnectionError
            from botocore.exceptions import ReadTimeoutError

            if isinstance(error, BotoConnectionError | ReadTimeoutError):
                return "ConnectionError"  # a timeout or reset: the conditional write is safe to resend
            code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                return "duplicate"
            if code in THROTTLED:
                return code
            raise
        return "applied"

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return self.effect(ctx, inputs).text

    def effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> Effect:
        from bot.actions.dynamodb import _count_missed

        store = ctx.partner.failed_requests
        if store is None:
            return Effect(f"cannot replay: {ctx.partner.name} has no failed_requests store", "no-store")
        count = _count_missed(ctx)
        budget = self.budget(ctx, inputs)
        about = "about " if store.kind == "sqs" else ""  # SQS counts are approximate
        # The budget follows the table's capacity: a table changed since approval asks again.
        fingerprint = f"{store.name}->{inputs['table']}@{budget:.0f}"
        if count == 0:
            return Effect(
                f"{store.name} holds no missed writes", fingerprint, False, f"{store.name} is empty"
            )
        return Effect(
            f"writes up to {about}{count:,} missed writes from {store.name} into {inputs['table']} "
            f"at ≤ {budget:,.0f} writes/s (≈ {count / budget:,.0f}s); each write is conditional on its "
            "version, so writes already there are skipped, never doubled",
            fingerprint,
        )


class HotKeys:
    """Hot partition keys from the failed-request store (Contributor Insights where enabled)."""

    name = "dynamodb.hot_keys"
    outputs: tuple[str, ...] = ("top", "sampled", "hottest_share", "source")
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["table"],
        "additionalProperties": False,
        "properties": {
            "table": {"type": "string"},
            "sample": {"type": "integer", "minimum": 1, "maximum": 10000},
            "top": {"type": "integer", "minimum": 1, "maximum": 50},
            "window_seconds": {"type": "integer", "minimum": 60, "maximum": 86400},
        },
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        top_n = int(inputs.get("top", 5))
        insights = self._from_contributor_insights(
            ctx, inputs["table"], top_n, int(inputs.get("window_seconds", 900))
        )
        if insights is not None:
            top, total, source = insights
        else:
            top, total = self._from_failed_requests(
                ctx, inputs["table"], int(inputs.get("sample", 1000)), top_n
            )
            source = "failed-request store sample"
        share = round(top[0]["count"] / total, 3) if top and total else 0.0
        summary = (
            f"hottest key {top[0]['key']} has {share:.0%} of {total:,} {'throttled requests' if 'Insights' in source else 'failed writes'}"
            f" ({source})"
            if top
            else f"no hot keys found ({source})"
        )
        return StepOutcome.done(
            summary,
            {"top": top, "sampled": total, "hottest_share": share, "source": source},
            sampled=total,
            hottest_share=share,
        )

    @staticmethod
    def _from_contributor_insights(
        ctx: ActionContext, table: str, top_n: int, window_seconds: int
    ) -> tuple[list[dict[str, Any]], int, str] | None:
        """The table's Contributor Insights rule, when enabled: most throttled keys, else most accessed."""
        import datetime as dt

        from botocore.exceptions import BotoCoreError, ClientError

        try:
            described = ctx.aws.client("dynamodb").describe_contributor_insights(TableName=table)
            if described.get("ContributorInsightsStatus") != "ENABLED":
                return None
            rules = described.get("ContributorInsightsRuleList") or []
            rule = next((r for r in rules if "-PKT-" in r), None) or next(
                (r for r in rules if "-PKC-" in r), None
            )
            if rule is None:
                return None
            end = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)
            report = ctx.aws.client("cloudwatch").get_insight_rule_report(
                RuleName=rule,
                StartTime=end - dt.timedelta(seconds=window_seconds),
                EndTime=end,
                Period=60,
                MaxContributorCount=top_n,
                OrderBy="Sum",
            )
        except (ClientError, BotoCoreError, AttributeError):
            return None  # not enabled, not permitted, or not offered here: sample instead
        top = [
            {"key": "|".join(c.get("Keys") or []), "count": int(c.get("ApproximateAggregateValue") or 0)}
            for c in report.get("Contributors") or []
        ]
        total = int(report.get("AggregateValue") or sum(t["count"] for t in top))
        kind = "throttled" if "-PKT-" in rule else "accessed"
        return top, total, f"Contributor Insights ({kind} keys, rule {rule})"

    @staticmethod
    def _from_failed_requests(
        ctx: ActionContext, table_name: str, limit: int, top_n: int
    ) -> tuple[list[dict[str, Any]], int]:
        table = describe_table(ctx, table_name)
        pk = next(k["AttributeName"] for k in table["KeySchema"] if k["KeyType"] == "HASH")
        counts: Counter[str] = Counter()
        cursor, sampled, read = None, 0, []
        try:
            while sampled < limit:
                records, cursor = store_records(ctx, cursor, min(100, limit - sampled), peek=True)
                read += records
                for record in records:
                    value = plain({pk: record["item"][pk]})[pk] if pk in record["item"] else "?"
                    counts[str(value)] += 1
                sampled += len(records)
                if not cursor or not records:
                    break
        finally:
            release_peeked(ctx, read)
        return [{"key": k, "count": c} for k, c in counts.most_common(top_n)], sampled

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return "reads Contributor Insights or samples the failed-request store; changes nothing"


REPLAY = register(Replay())
HOT_KEYS = register(HotKeys())
