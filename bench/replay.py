"""Replaying missed writes behind the throttling simulator: `dynamodb.replay` vs `batch_writer`.

10,000 missed writes (from a failed-request store table) go into a table provisioned at 500 WCU,
enforced by bot.partners.faults (per-table and per-partition buckets, answers
ProvisionedThroughputExceededException as DynamoDB does). The replay's budget is the whole
500 WCU. The baseline is what a user would write: boto3's `batch_writer` with default retries.

Printed for each: items/s, share of the budget used, throttled requests, duplicates when the
replay is run twice, and work redone after a crash injected at 50%.
Targets: >= 90% of budget, <= 1% throttled, 0 duplicates, <= 1 batch redone. Asserts nothing.

    python bench/replay.py            # 10,000 writes
    python bench/replay.py --short    # CI: 1,000 writes
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Any

from _common import Crash, drive_step, executions_store

BUDGET_WCU = 500
CEILING = [float(BUDGET_WCU)]  # measured at start: what the local engine can take at all
PAGE = 25


def missed_writes(client: Any, count: int) -> None:
    """The failed-request store: items that were throttled during the incident, at version 2."""
    client.create_table(
        TableName="bench-failed-writes",
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(0, count, 25):
        client.batch_write_item(
            RequestItems={
                "bench-failed-writes": [
                    {
                        "PutRequest": {
                            "Item": {
                                "request_id": {"S": f"r{n:06d}"},
                                "item": {"M": order(n)},
                                "version": {"N": "2"},
                            }
                        }
                    }
                    for n in range(start, min(count, start + 25))
                ]
            }
        )


def order(n: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"CUSTOMER#{n % 997:04d}"},
        "sk": {"S": f"ORDER#{n:07d}"},
        "status": {"S": ("NEW", "PICKED", "SHIPPED")[n % 3]},
        "amount_cents": {"N": str(1000 + n * 7 % 90000)},
        "note": {"S": "x" * 200},
    }


def target_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        ProvisionedThroughput={"ReadCapacityUnits": 1000, "WriteCapacityUnits": BUDGET_WCU},
    )


class CrashAt:
    """Kill the 'sandbox' at the n-th accepted write to `table` (a BaseException, like a timeout)."""

    def __init__(self, table: str, at: int) -> None:
        self.table, self.at, self.writes, self.fired = table, at, 0, False

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == self.table or self.table in params.get("RequestItems", {}):
            self.writes += 1
            if self.writes == self.at and not self.fired:
                self.fired = True
                raise Crash


def engine_ceiling(writes: int = 1_000, workers: int = 16) -> float:
    """Conditional single-item writes/s this machine's engine takes at all (no simulator, no pacing)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client("dynamodb")
    target_table(client, "ceiling-orders")

    def put(n: int) -> None:
        client.put_item(
            TableName="ceiling-orders",
            Item={**order(n), "version": {"N": "2"}},
            ConditionExpression="attribute_not_exists(pk) OR version < :v",
            ExpressionAttributeValues={":v": {"N": "2"}},
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, range(writes)))
    return writes / (time.perf_counter() - started)


def ours(count: int) -> dict[str, float]:
    import boto3

    from bot.actions.base import ActionContext
    from bot.actions.replay import REPLAY
    from bot.catalog import load_catalog
    from bot.partners.faults import Capacity, FaultInjector
    from bot.partners.model import FailedRequestStore
    from bot.partners.sessions import PartnerSession

    store = executions_store()
    client = boto3.client("dynamodb")
    missed_writes(client, count)
    base = load_catalog().partners["partner-acme"]
    partner = dataclasses.replace(
        base,
        failed_requests=FailedRequestStore("table", "bench-failed-writes", "orders"),
        capacity=dataclasses.replace(base.capacity, replay_budget_share=1.0),
    )
    results: dict[str, float] = {}
    for table in ("bench-orders", "bench-orders-crash"):
        target_table(client, table)
    injector = FaultInjector(
        capacity={
            t: Capacity(write_units=BUDGET_WCU, burst_seconds=1)
            for t in ("bench-orders", "bench-orders-crash")
        }
    )
    session = PartnerSession(partner, injector)
    crash = CrashAt("bench-orders-crash", count // 2)
    session.client("dynamodb").meta.events.register("provide-client-params.dynamodb.PutItem", crash)

    def run(execution_id: str, table: str) -> tuple[Any, int, float]:
        def context(**kw: Any) -> ActionContext:
            return ActionContext(
                execution_id=execution_id,
                step_id="replay",
                attempt=1,
                idempotency_key=f"{execution_id}#replay#1",
                partner=partner,
                aws=session,
                params={},
                **kw,
            )

        started = time.perf_counter()
        outcome, _ = drive_step(
            REPLAY,
            {"table": table, "checkpoint_every_pages": 8, "concurrency": 16},
            context,
            store,
            execution_id,
            "replay",
        )
        return outcome, injector.stats.total, time.perf_counter() - started

    before_throttled = injector.stats.throttled
    first, requests, seconds = run("bench-1", "bench-orders")
    results["items_per_second"] = count / seconds
    results["budget_share"] = results["items_per_second"] / BUDGET_WCU
    results["reachable_share"] = results["items_per_second"] / min(BUDGET_WCU, CEILING[0])
    results["throttled_share"] = (injector.stats.throttled - before_throttled) / max(1, requests)
    results["throttled"] = injector.stats.throttled - before_throttled
    second, _, _ = run("bench-2", "bench-orders")
    results["duplicates"] = second.outputs["applied"]  # writes the second run applied again
    results["skipped_on_rerun"] = second.outputs["skipped_duplicates"]
    crashed, _, _ = run("bench-crash", "bench-orders-crash")
    # The target was empty: anything skipped as already there was written before the crash and redone.
    redone = crashed.outputs["skipped_duplicates"]
    results["redone_items"] = redone
    results["redone_batches"] = math.ceil(redone / PAGE)
    results["applied"] = first.outputs["applied"]
    return results


def baseline(count: int) -> dict[str, float]:
    """boto3's batch_writer with default retries, through the same simulator."""
    import boto3

    from bot.partners.faults import Capacity, FaultInjector

    client = boto3.client("dynamodb")
    for table in ("base-orders", "base-orders-crash"):
        target_table(client, table)
    injector = FaultInjector(
        capacity={
            t: Capacity(write_units=BUDGET_WCU, burst_seconds=1) for t in ("base-orders", "base-orders-crash")
        }
    )
    resource = boto3.resource("dynamodb")
    injector.install(resource.meta.client)
    deserialize = boto3.dynamodb.types.TypeDeserializer().deserialize
    items = [{k: deserialize(v) for k, v in order(n).items()} for n in range(count)]
    landed_on_existing = 0

    def write_all(table: str, crash_at: int | None = None) -> None:
        with resource.Table(table).batch_writer() as batch:
            for i, item in enumerate(items):
                if crash_at is not None and i == crash_at:
                    raise Crash
                batch.put_item(Item=item)

    started = time.perf_counter()
    write_all("base-orders")
    seconds = time.perf_counter() - started
    stats_first = (injector.stats.throttled, injector.stats.total)
    # Run twice: every write of the second run lands again on an item that is already there.
    landed_on_existing = count
    write_all("base-orders")
    try:
        write_all("base-orders-crash", crash_at=count // 2)
    except Crash:
        pass
    # No checkpoint: the rerun starts over, so everything written before the crash is redone.
    write_all("base-orders-crash")
    redone = count // 2
    return {
        "items_per_second": count / seconds,
        "budget_share": count / seconds / BUDGET_WCU,
        "reachable_share": count / seconds / BUDGET_WCU,
        "throttled": stats_first[0],
        "throttled_share": stats_first[0] / max(1, stats_first[1]),
        "duplicates": landed_on_existing,
        "redone_items": redone,
        "redone_batches": math.ceil(redone / PAGE),
        "applied": count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--writes", type=int, default=10_000)
    args = parser.parse_args()
    count = 1_000 if args.short else args.writes

    import os

    from bot.local.aws import EmbeddedAws

    # AWS's own DynamoDB engine (Java): moto's in-process engine spends ~7 ms of CPU per call
    # and would measure itself, not the replay.
    with EmbeddedAws("ddblocal") as aws:
        os.environ.update(aws.env())
        CEILING[0] = engine_ceiling()
        mine = ours(count)
        theirs = baseline(count)
    print(
        f"replay: {count:,} missed writes into a table of {BUDGET_WCU} WCU on DynamoDB Local behind the "
        f"throttling simulator; budget {BUDGET_WCU} WCU"
    )
    print(
        f"  the engine here takes at most {CEILING[0]:,.0f} conditional single-item writes/s (16 threads); "
        "a budget above that cannot be reached on this machine"
    )
    print(f"  {'':44}{'dynamodb.replay':>16}  {'batch_writer':>14}  target")
    rows = [
        ("items/s", "items_per_second", "{:,.0f}", ""),
        ("share of budget used", "budget_share", "{:.0%}", ">= 90%"),
        ("share of min(budget, engine ceiling)", "reachable_share", "{:.0%}", ""),
        ("throttled requests", "throttled", "{:,.0f}", ""),
        ("throttled share of requests", "throttled_share", "{:.2%}", "<= 1%"),
        ("duplicate writes when run twice", "duplicates", "{:,.0f}", "0"),
        ("items redone after a crash at 50%", "redone_items", "{:,.0f}", ""),
        ("batches redone after a crash at 50%", "redone_batches", "{:,.0f}", "<= 1"),
    ]
    for label, key, fmt, target in rows:
        print(f"  {label:44}{fmt.format(mine[key]):>16}  {fmt.format(theirs[key]):>14}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
