"""The sharded due-index: runs spread over its partitions, the sweeper sees all of them in order."""

from __future__ import annotations

from collections import Counter

import boto3

from bot.store import keys
from bot.store.executions import ExecutionStore


def put_due(client, table: str, execution_id: str, due_ms: int, bucket: str | None = None) -> None:
    client.put_item(
        TableName=table,
        Item={
            **{k: {"S": v} for k, v in keys.state_key(execution_id).items()},
            keys.DUE_BUCKET: {"S": bucket or keys.due_bucket(execution_id)},
            keys.DUE_AT: {"N": str(due_ms)},
        },
    )


def test_due_runs_spread_over_every_partition_of_the_index():
    spread = Counter(keys.due_bucket(f"rb-{i:010d}") for i in range(4000))
    assert set(spread) == set(keys.due_buckets()) - {keys.LEGACY_DUE_BUCKET}
    assert max(spread.values()) < 1.2 * 4000 / keys.DUE_BUCKETS, spread  # no hot partition
    assert keys.due_bucket("rb-abcdefghij") == keys.due_bucket("rb-abcdefghij")  # stable per run


def test_the_sweeper_sees_every_shard_and_the_legacy_partition_oldest_first(executions_table):
    client = boto3.client("dynamodb")
    store = ExecutionStore(client, executions_table)
    for i in range(40):
        put_due(client, executions_table, f"rb-shard{i:05d}", 1_000 + i)
    put_due(client, executions_table, "rb-legacy0001", 500, bucket=keys.LEGACY_DUE_BUCKET)  # pre-sharding
    put_due(client, executions_table, "rb-future0001", 10**13)  # not due yet

    due = [d.execution_id for d in store.due(now_ms=2_000, limit=100)]
    assert due[0] == "rb-legacy0001", "an item written before sharding still drains"
    assert due[1:] == [f"rb-shard{i:05d}" for i in range(40)], "merged across shards by due time"
    assert "rb-future0001" not in due
    assert [d.execution_id for d in store.due(now_ms=2_000, limit=5)] == due[:5]
