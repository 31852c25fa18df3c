"""`runbook-bot seed-demo`: the demo partners' resources, showing a throttling incident.

Creates (where the standard AWS variables point) the partners' tables and drill tables, realistic
orders and payments with hot and cold partition keys, failed-request stores holding missed writes
(some already applied, so replays must skip them), and CloudWatch metrics of throttling over the
last 15 minutes. Safe to run twice: what exists is left as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

ACME_WCU = 50  # provisioned on purpose: the incident is this table running out of writes


@dataclass
class SeedReport:
    created_tables: list[str] = field(default_factory=list)
    existing_tables: list[str] = field(default_factory=list)
    items_written: int = 0
    missed_writes: int = 0
    metrics: str = ""

    def __str__(self) -> str:
        return (
            f"tables created: {', '.join(self.created_tables) or 'none'}; already there: "
            f"{', '.join(self.existing_tables) or 'none'}; items written: {self.items_written}; "
            f"missed writes stored: {self.missed_writes}; metrics: {self.metrics}"
        )


def seed_demo(session: Any, *, now: float | None = None, orders: int = 2000, missed: int = 300) -> SeedReport:
    report = SeedReport()
    ddb = session.client("dynamodb")
    now = time.time() if now is None else now
    rng = random.Random(7)
    for name in ("acme-orders", "acme-orders-drill"):
        _table(
            ddb,
            report,
            name,
            [("pk", "S"), ("sk", "S")],
            provisioned=(100, ACME_WCU),
            gsi=("by-status", ("status", "S"), ("updated_at", "N")),
        )
    for name in ("acme-failed-writes", "acme-failed-writes-drill"):
        _table(ddb, report, name, [("request_id", "S")], provisioned=None)
    for name in ("globex-payments", "globex-payments-drill"):
        _table(ddb, report, name, [("account_id", "S"), ("payment_id", "S")], provisioned=(100, 100))

    if "acme-orders" in report.created_tables:
        report.items_written += _orders(ddb, "acme-orders", orders, rng, now)
        report.missed_writes += _missed_acme(ddb, "acme-orders", "acme-failed-writes", missed, rng, now)
    if "acme-orders-drill" in report.created_tables:
        # Drills rehearse on resources of their own: a drill table and a drill failed-request store.
        report.items_written += _orders(ddb, "acme-orders-drill", orders // 4, rng, now)
        report.missed_writes += _missed_acme(
            ddb, "acme-orders-drill", "acme-failed-writes-drill", missed // 3, rng, now
        )
    sqs = session.client("sqs")
    if "globex-payments" in report.created_tables:
        report.items_written += _payments(ddb, "globex-payments", 500, rng, now)
        report.missed_writes += _missed_globex(sqs, "globex-missed-writes", 120, rng, now)
    if "globex-payments-drill" in report.created_tables:
        report.items_written += _payments(ddb, "globex-payments-drill", 200, rng, now)
        report.missed_writes += _missed_globex(sqs, "globex-missed-writes-drill", 40, rng, now)
    cloudwatch = session.client("cloudwatch")
    # The drill target shows the same incident: a drill rehearses detection on what it would see.
    report.metrics = "; ".join(
        _metrics(cloudwatch, now, table) for table in ("acme-orders", "acme-orders-drill")
    )
    return report


def _table(
    ddb: Any,
    report: SeedReport,
    name: str,
    keys: list[tuple[str, str]],
    provisioned: tuple[int, int] | None,
    gsi: tuple[str, tuple[str, str], tuple[str, str]] | None = None,
) -> None:
    attributes = {k: t for k, t in keys}
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": k, "KeyType": "HASH" if i == 0 else "RANGE"} for i, (k, _) in enumerate(keys)
        ],
    }
    if provisioned:
        request["BillingMode"] = "PROVISIONED"
        request["ProvisionedThroughput"] = {
            "ReadCapacityUnits": provisioned[0],
            "WriteCapacityUnits": provisioned[1],
        }
    else:
        request["BillingMode"] = "PAY_PER_REQUEST"
    if gsi:
        index, hash_key, range_key = gsi
        attributes.update({hash_key[0]: hash_key[1], range_key[0]: range_key[1]})
        spec: dict[str, Any] = {
            "IndexName": index,
            "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [
                {"AttributeName": hash_key[0], "KeyType": "HASH"},
                {"AttributeName": range_key[0], "KeyType": "RANGE"},
            ],
        }
        if provisioned:
            spec["ProvisionedThroughput"] = {
                "ReadCapacityUnits": provisioned[0],
                "WriteCapacityUnits": provisioned[1],
            }
        request["GlobalSecondaryIndexes"] = [spec]
    request["AttributeDefinitions"] = [
        {"AttributeName": k, "AttributeType": t} for k, t in attributes.items()
    ]
    try:
        ddb.create_table(**request)
    except ddb.exceptions.ResourceInUseException:
        report.existing_tables.append(name)
        return
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    report.created_tables.append(name)


def _customer(rng: random.Random) -> str:
    # A few hot customers carry most of the traffic, as in the incident.
    return f"CUSTOMER#{(int(rng.paretovariate(1.2)) - 1) % 200 + 1:04d}"  # CUSTOMER#0001 hottest


def _order(pk: str, n: int, now: float, version: int = 1) -> dict[str, Any]:
    return {
        "pk": {"S": pk},
        "sk": {"S": f"ORDER#{n:06d}"},
        "status": {"S": ["NEW", "PICKED", "SHIPPED"][n % 3]},
        "updated_at": {"N": str(int(now) - n)},
        "amount_cents": {"N": str(1000 + n * 7 % 90000)},
        "version": {"N": str(version)},
    }


def _orders(ddb: Any, table: str, count: int, rng: random.Random, now: float) -> int:
    requests = [{"PutRequest": {"Item": _order(_customer(rng), n, now)}} for n in range(count)]
    for i in range(0, len(requests), 25):
        _batch(ddb, table, requests[i : i + 25])
    return count


def _missed_acme(ddb: Any, table: str, store: str, count: int, rng: random.Random, now: float) -> int:
    """Writes that were throttled during the incident; one in five had landed anyway (retried by the client)."""
    stored = []
    for n in range(count):
        item = _order(_customer(rng), 100_000 + n, now, version=2)
        stored.append(
            {
                "PutRequest": {
                    "Item": {
                        "request_id": {"S": f"acme-{n:05d}"},
                        "item": {"M": item},
                        "version": {"N": "2"},
                        "failed_at": {"N": str(int((now - rng.uniform(60, 900)) * 1000))},
                        "error_code": {"S": "ProvisionedThroughputExceededException"},
                    }
                }
            }
        )
        if n % 5 == 0:
            _batch(ddb, table, [{"PutRequest": {"Item": item}}])
    for i in range(0, len(stored), 25):
        _batch(ddb, store, stored[i : i + 25])
    return count


def _payments(ddb: Any, table: str, count: int, rng: random.Random, now: float) -> int:
    requests = [
        {
            "PutRequest": {
                "Item": {
                    "account_id": {
                        "S": f"acct-{(int(rng.paretovariate(1.5)) - 1) % 50 + 1:04d}"
                    },  # acct-0001 hottest
                    "payment_id": {"S": f"pay-{n:06d}"},
                    "amount_cents": {"N": str(500 + n)},
                    "version": {"N": "1"},
                }
            }
        }
        for n in range(count)
    ]
    for i in range(0, len(requests), 25):
        _batch(ddb, table, requests[i : i + 25])
    return count


def _missed_globex(sqs: Any, queue: str, count: int, rng: random.Random, now: float) -> int:
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    for start in range(0, count, 10):
        entries = []
        for n in range(start, min(count, start + 10)):
            item = {
                "account_id": {"S": f"acct-{1 + n % 50:04d}"},
                "payment_id": {"S": f"pay-late-{n:05d}"},
                "amount_cents": {"N": str(100 + n)},
            }
            entries.append(
                {"Id": str(n), "MessageBody": json.dumps({"item": item, "version": 1, "id": f"globex-{n}"})}
            )
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return count


def _metrics(cloudwatch: Any, now: float, table: str) -> str:
    """Throttling on `table` in 8 of the last 15 minutes, peaking at 3.1x provisioned writes."""
    end = dt.datetime.fromtimestamp(now, dt.UTC).replace(second=0, microsecond=0)
    existing = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "w",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/DynamoDB",
                        "MetricName": "WriteThrottleEvents",
                        "Dimensions": [{"Name": "TableName", "Value": table}],
                    },
                    "Period": 60,
                    "Stat": "Sum",
                },
            }
        ],
        StartTime=end - dt.timedelta(minutes=15),
        EndTime=end + dt.timedelta(minutes=1),
    )
    if any(r.get("Values") for r in existing["MetricDataResults"]):
        return f"throttling metrics already present for the last 15 minutes on {table}"
    data = []
    peaks = [0, 0, 0.9, 1.4, 2.2, 3.1, 2.8, 2.5, 1.9, 1.2, 0.95, 1.1, 0.8, 0.7, 0.6]
    for minute, ratio in enumerate(peaks):
        at = end - dt.timedelta(minutes=15 - minute)
        throttled = max(0.0, ratio - 1.0) * ACME_WCU * 60
        dims = [{"Name": "TableName", "Value": table}]
        data += [
            {
                "MetricName": "ConsumedWriteCapacityUnits",
                "Dimensions": dims,
                "Timestamp": at,
                "Value": ratio * ACME_WCU * 60,
                "Unit": "Count",
            },
            {
                "MetricName": "WriteThrottleEvents",
                "Dimensions": dims,
                "Timestamp": at,
                "Value": throttled,
                "Unit": "Count",
            },
            {
                "MetricName": "ReadThrottleEvents",
                "Dimensions": dims,
                "Timestamp": at,
                "Value": 0.0,
                "Unit": "Count",
            },
            {
                "MetricName": "SuccessfulRequestLatency",
                "Dimensions": dims,
                "Timestamp": at,
                "Value": 8.0 + 30 * max(0.0, ratio - 1),
                "Unit": "Milliseconds",
            },
        ]
    for i in range(0, len(data), 20):
        cloudwatch.put_metric_data(Namespace="AWS/DynamoDB", MetricData=data[i : i + 20])
    minutes = sum(1 for ratio in peaks if ratio > 1)
    return f"{len(data)} datapoints: throttling in {minutes} of the last 15 minutes on {table}"


def _batch(ddb: Any, table: str, requests: list[dict[str, Any]]) -> None:
    pending = {table: requests}
    for attempt in range(8):
        answer = ddb.batch_write_item(RequestItems=pending)
        pending = answer.get("UnprocessedItems") or {}
        if not pending:
            return
        time.sleep(0.05 * 2**attempt)
    raise RuntimeError(f"could not write {len(pending.get(table, []))} demo items to {table}")
