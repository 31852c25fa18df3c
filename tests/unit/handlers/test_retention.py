"""One retention rule: once a run's state item expires, no item of that run remains."""

from __future__ import annotations

import boto3

from bot.catalog import load_catalog
from bot.engine.starts import new_execution, run_locks
from bot.handlers import worker
from bot.store import keys
from bot.store.codec import to_item
from bot.store.executions import ExecutionStore
from bot.store.exports import ExportRequest, ExportStore
from bot.store.model import StepRecord

TTL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def ended_run(store: ExecutionStore):
    catalog = load_catalog()
    runbook, partner = catalog.runbooks["throttle"], catalog.partners["partner-acme"]
    params = {"table": "orders", "window": 900, "mode": "on-demand", "write_units": 200}
    ex = new_execution(
        "rb-expiredrun",
        runbook,
        partner,
        params,
        requested_by="U0REQUESTER",
        channel="C0ACMEOPS",
        now_ms=1_700_000_000_000,
        trigger="slash",
    )
    locks = run_locks(runbook, partner, params, drill=False)
    assert store.create_locked(ex, locks) is None
    store.save_progress(ex.execution_id, "replay", {"cursor": "x"}, 1_700_000_000_000)
    store.claim(ex.execution_id, 0, "worker-a", 1_700_000_000_000, 1_000)
    big = StepRecord("detect", "succeeded", 1, 0, 1, {"blob": "x" * 10_000})
    store._spill_if_large(ex.execution_id, big)
    store.client.put_item(
        TableName=store.table, Item={**{k: {"S": v} for k, v in keys.slack_key(ex.execution_id).items()}}
    )
    asked = ExportRequest(ex.execution_id, "U0REQUESTER", 1_700_000_001_000, "C0ACMEOPS")
    assert ExportStore(store.client, store.table).request(asked) is None  # an evidence-file request
    return ex


def remove_record(ex, identity):
    record = {
        "eventID": "1",
        "eventName": "REMOVE",
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "Keys": keys_of(ex),
            "OldImage": to_item(ex),
            "SequenceNumber": "1",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    if identity:
        record["userIdentity"] = identity
    return record


def keys_of(ex):
    return {k: {"S": v} for k, v in keys.state_key(ex.execution_id).items()}


def items_of(client, table: str, ex) -> list:
    mine = client.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": keys.execution_pk(ex.execution_id)}},
    )["Items"]
    locks = [
        client.get_item(TableName=table, Key={k: {"S": v} for k, v in lock.items()}).get("Item")
        for lock in [keys.table_lock_key("partner-acme", "acme-orders")]
    ]
    return mine + [lock for lock in locks if lock]


def test_when_ttl_removes_a_runs_state_nothing_of_the_run_remains(executions_table):
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

    client = boto3.client("dynamodb")
    store = ExecutionStore(client, executions_table)
    worker.SANDBOX.renew()
    ex = ended_run(store)
    client.delete_item(TableName=executions_table, Key=keys_of(ex))  # what TTL does
    # output, progress, claim, slack, the requester's history entry, an export request, lock
    assert len(items_of(client, executions_table, ex)) == 7

    worker.advance_record(
        DynamoDBRecord(remove_record(ex, identity=None)), worker.SANDBOX()
    )  # someone's delete: not ours
    assert len(items_of(client, executions_table, ex)) == 7
    worker.advance_record(DynamoDBRecord(remove_record(ex, identity=TTL)), worker.SANDBOX())
    assert items_of(client, executions_table, ex) == []
    worker.advance_record(
        DynamoDBRecord(remove_record(ex, identity=TTL)), worker.SANDBOX()
    )  # redelivered: harmless
    worker.SANDBOX.renew()


def test_a_lock_another_run_took_over_is_left_alone(executions_table):
    client = boto3.client("dynamodb")
    store = ExecutionStore(client, executions_table)
    lock = keys.table_lock_key("partner-acme", "acme-orders")
    client.put_item(
        TableName=executions_table,
        Item={**{k: {"S": v} for k, v in lock.items()}, "execution_id": {"S": "rb-newrun0001"}},
    )
    store.purge("rb-expiredrun", [lock])
    assert client.get_item(TableName=executions_table, Key={k: {"S": v} for k, v in lock.items()}).get("Item")
