"""The embedded AWS answers what the actions call, as AWS would, and says what is missing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.local import aws


def test_contributor_insights_are_disabled_on_a_table_that_never_enabled_them(moto_server, server_table):
    ddb = moto_server.client("dynamodb")

    answer = ddb.describe_contributor_insights(TableName=server_table)

    assert answer["TableName"] == server_table
    assert answer["ContributorInsightsStatus"] == "DISABLED"
    assert not answer.get("ContributorInsightsRuleList")
    with pytest.raises(ClientError) as missing:
        ddb.describe_contributor_insights(TableName="no-such-table")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_missing_java_or_dynamodb_local_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(aws.shutil, "which", lambda name: None)
    with pytest.raises(aws.MissingDependency, match=r"java is not on PATH: .*--engine moto"):
        aws.check_dependencies("ddblocal")
    aws.check_dependencies("moto")  # moto needs no java

    monkeypatch.setattr(aws.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(aws, "REPO", tmp_path)
    with pytest.raises(aws.MissingDependency, match=r"run `make ddblocal`"):
        aws.check_dependencies("ddblocal")


def _put_t_while_lock_is_free(table: str) -> list[dict[str, Any]]:
    """A transaction that puts item T only if item LOCK is missing: cancelled while LOCK is there."""
    return [
        {"Put": {"TableName": table, "Item": {"pk": {"S": "T"}, "sk": {"S": "x"}}}},
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": {"pk": {"S": "LOCK"}, "sk": {"S": "HELD"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
    ]


def test_a_cancelled_transaction_never_undoes_what_other_requests_wrote_meanwhile(moto_server, server_table):
    """moto backs a transaction's tables up and restores them when a condition fails; CI lost a
    run's approval and brought a released lock back that way. One request at a time, a cancelled
    transaction undoes only itself, as in DynamoDB."""
    import threading

    ddb = moto_server.client("dynamodb")
    ddb.put_item(TableName=server_table, Item={"pk": {"S": "LOCK"}, "sk": {"S": "HELD"}})
    stop = threading.Event()
    cancelled = []

    def cancel_forever() -> None:
        while not stop.is_set():
            try:
                ddb.transact_write_items(TransactItems=_put_t_while_lock_is_free(server_table))
            except ClientError as error:
                cancelled.append(error.response["Error"]["Code"])

    canceller = threading.Thread(target=cancel_forever)
    canceller.start()
    try:
        for i in range(150):
            ddb.put_item(TableName=server_table, Item={"pk": {"S": f"W#{i}"}, "sk": {"S": "STATE"}})
    finally:
        stop.set()
        canceller.join()
    kept = ddb.scan(TableName=server_table, ConsistentRead=True)["Items"]
    assert len([item for item in kept if item["pk"]["S"].startswith("W#")]) == 150
    assert not [item for item in kept if item["pk"]["S"] == "T"], "a cancelled transaction wrote nothing"
    assert cancelled and set(cancelled) == {"TransactionCanceledException"}


def test_after_a_cancelled_transaction_the_stream_goes_on_without_its_records(moto_server, server_table):
    """moto undid a cancelled transaction by swapping in a copy of the table with its own stream
    shard: the iterators consumers held never saw another record, and each kept a whole table copy
    alive (a 500-run bench reached 24 GB). In DynamoDB a cancelled transaction writes nothing and
    adds no stream record, and the stream goes on."""
    ddb = moto_server.client("dynamodb")
    streams = moto_server.client("dynamodbstreams")
    arn = ddb.describe_table(TableName=server_table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")[
        "ShardIterator"
    ]

    def put(pk: str, **condition: str) -> dict[str, Any]:
        return {"Put": {"TableName": server_table, "Item": {"pk": {"S": pk}, "sk": {"S": "X"}}, **condition}}

    ddb.put_item(**put("held")["Put"])
    with pytest.raises(ClientError) as cancelled:
        ddb.transact_write_items(
            TransactItems=[put("undone"), put("held", ConditionExpression="attribute_not_exists(pk)")]
        )
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    ddb.put_item(**put("after")["Put"])

    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records] == ["held", "after"]
    assert "Item" not in ddb.get_item(TableName=server_table, Key={"pk": {"S": "undone"}, "sk": {"S": "X"}})


def test_a_cancelled_transaction_undoes_its_update_delete_and_put_and_a_later_one_applies(
    moto_server, server_table
):
    ddb = moto_server.client("dynamodb")
    kept = {"pk": {"S": "kept"}, "sk": {"S": "X"}}
    gone = {"pk": {"S": "deleted"}, "sk": {"S": "X"}}
    ddb.put_item(TableName=server_table, Item={**kept, "v": {"N": "1"}})
    ddb.put_item(TableName=server_table, Item=gone)
    update = {
        "Update": {
            "TableName": server_table,
            "Key": kept,
            "UpdateExpression": "SET v = :two",
            "ExpressionAttributeValues": {":two": {"N": "2"}},
        }
    }
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[
                update,
                {"Delete": {"TableName": server_table, "Key": gone}},
                {
                    "Put": {
                        "TableName": server_table,
                        "Item": {"pk": {"S": "new"}, "sk": {"S": "X"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    assert ddb.get_item(TableName=server_table, Key=kept)["Item"]["v"] == {"N": "1"}, "the update is undone"
    assert "Item" in ddb.get_item(TableName=server_table, Key=gone), "the delete is undone"

    ddb.transact_write_items(TransactItems=[update])
    assert ddb.get_item(TableName=server_table, Key=kept)["Item"]["v"] == {"N": "2"}


def _latest_iterator(moto_server: Any, table: str) -> tuple[Any, str]:
    streams = moto_server.client("dynamodbstreams")
    arn = moto_server.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")
    return streams, iterator["ShardIterator"]


def test_a_reader_racing_cancelled_transactions_sees_every_write_once_and_none_taken_back(
    moto_server, server_table, monkeypatch
):
    """A GetRecords served while a transaction was writing could return the record of a write its
    cancel then took back, and the next record got that sequence number again, so the reader's
    next iterator skipped it (a chaos drill waited forever for its next version). The Streams
    API takes its turn with every DynamoDB request, as DynamoDB's stream only ever shows
    committed writes."""
    import threading

    from moto.dynamodb.models.table import StreamShard

    add = StreamShard.add

    def slow_add(self: Any, *args: Any) -> None:  # a busy server: the window stays open a while
        add(self, *args)
        time.sleep(0.003)

    monkeypatch.setattr(StreamShard, "add", slow_add)
    ddb = moto_server.client("dynamodb")
    ddb.put_item(TableName=server_table, Item={"pk": {"S": "LOCK"}, "sk": {"S": "HELD"}})
    streams, iterator = _latest_iterator(moto_server, server_table)
    stop = threading.Event()
    seen: list[str] = []

    def cancel_forever() -> None:
        while not stop.is_set():
            with pytest.raises(ClientError):
                ddb.transact_write_items(TransactItems=_put_t_while_lock_is_free(server_table))

    def read_forever() -> None:
        nonlocal iterator
        while not stop.is_set() or len(seen) < 100:
            answer = streams.get_records(ShardIterator=iterator)
            seen.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in answer["Records"])
            iterator = answer["NextShardIterator"]
            if stop.is_set() and not answer["Records"]:
                break

    threads = [threading.Thread(target=cancel_forever), threading.Thread(target=read_forever)]
    for thread in threads:
        thread.start()
    try:
        for i in range(100):
            ddb.put_item(TableName=server_table, Item={"pk": {"S": f"W#{i}"}, "sk": {"S": "STATE"}})
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert seen == [f"W#{i}" for i in range(100)]


def test_a_shard_iterator_expires_after_its_lifetime_and_expired_ones_are_dropped(
    moto_server, server_table, monkeypatch
):
    """DynamoDB Streams: an iterator expires 15 minutes after it is returned and then fails with
    ExpiredIteratorException. moto kept every iterator ever returned (one per GetRecords), so
    pollers that ran for long grew without bound."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    streams, iterator = _latest_iterator(moto_server, server_table)
    monkeypatch.setattr(aws, "SHARD_ITERATOR_LIFETIME_S", -1)
    with pytest.raises(ClientError) as expired:
        streams.get_records(ShardIterator=iterator)
    assert expired.value.response["Error"]["Code"] == "ExpiredIteratorException"

    monkeypatch.setattr(aws, "SHARD_ITERATOR_LIFETIME_S", 0.3)
    _, iterator = _latest_iterator(moto_server, server_table)
    backend = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID][aws.REGION]

    for _ in range(60):
        iterator = streams.get_records(ShardIterator=iterator)["NextShardIterator"]
        time.sleep(0.02)
    assert len(backend.shard_iterators) < 40, "iterators older than their lifetime are dropped"
    assert streams.get_records(ShardIterator=iterator)["Records"] == []


def test_queries_and_scans_keep_dynamodb_key_order_numbers_as_numbers(moto_server):
    """The embedded AWS sorts moto's items on their converted key values (not DynamoType
    comparisons): the order stays DynamoDB's, numbers compared as numbers."""
    ddb = moto_server.client("dynamodb")
    ddb.create_table(
        TableName="ordered",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "n", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for pk in ("b", "a"):
        for n in ("10", "9", "100", "-1.5"):
            ddb.put_item(TableName="ordered", Item={"pk": {"S": pk}, "n": {"N": n}})

    query = ddb.query(
        TableName="ordered",
        KeyConditionExpression="pk = :a",
        ExpressionAttributeValues={":a": {"S": "a"}},
    )
    assert [i["n"]["N"] for i in query["Items"]] == ["-1.5", "9", "10", "100"]
    seen, start = [], {}
    while True:
        page = ddb.scan(TableName="ordered", Limit=3, **start)
        seen += [(i["pk"]["S"], i["n"]["N"]) for i in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    assert seen == [(pk, n) for pk in ("a", "b") for n in ("-1.5", "9", "10", "100")]
