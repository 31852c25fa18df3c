"""What a plan predicts for each action, on moto, through a session whose guard refuses every
non-read call: exact effects and outputs, and nothing written."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bot.actions.base import REGISTRY, ActionContext
from bot.actions.preview import preview
from bot.catalog import load_catalog
from bot.exceptions import ActionError
from bot.partners.model import CapacityLimits, FailedRequestStore, Partner
from bot.partners.sessions import PartnerSession, PlanGuard

CATALOG = load_catalog()


@pytest.fixture
def aws() -> Iterator[Any]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="acme-orders",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PROVISIONED",
            ProvisionedThroughput={"ReadCapacityUnits": 100, "WriteCapacityUnits": 50},
        )
        ddb.create_table(
            TableName="acme-failed-writes",
            KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield ddb


def acme(**changes: Any) -> Partner:
    return dataclasses.replace(CATALOG.partners["partner-acme"], **changes)


def context(partner: Partner, step_id: str = "step") -> ActionContext:
    return ActionContext(
        execution_id="rb-planplanpl",
        step_id=step_id,
        attempt=1,
        idempotency_key="k",
        partner=partner,
        aws=PartnerSession(partner, None, PlanGuard()),
        params={},
        checkpoint=None,
    )


def missed(ddb: Any, request_id: str, pk: str, version: int) -> None:
    ddb.put_item(
        TableName="acme-failed-writes",
        Item={
            "request_id": {"S": request_id},
            "version": {"N": str(version)},
            "item": {"M": {"pk": {"S": pk}, "sk": {"S": "A"}, "total": {"N": "1"}}},
        },
    )


def test_a_capacity_change_predicts_the_setting_it_would_set_and_keep_and_changes_nothing(aws):
    outcome = preview(REGISTRY["dynamodb.set_capacity"], context(acme()), {"table": "acme-orders"})
    assert outcome.figures["plan"] == "approval"
    assert outcome.summary.startswith("changes acme-orders from 100 RCU / 50 WCU to on-demand")
    assert outcome.outputs == {
        "previous": {"billing_mode": "PROVISIONED", "read_units": 100, "write_units": 50},
        "current": {"billing_mode": "PAY_PER_REQUEST", "read_units": 0, "write_units": 0},
        "changed": True,
    }
    table = aws.describe_table(TableName="acme-orders")["Table"]
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 50
    assert (table.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"


def test_a_capacity_already_set_is_a_skip_with_its_reason(aws):
    inputs = {"table": "acme-orders", "mode": "provisioned", "read_units": 100, "write_units": 50}
    outcome = preview(REGISTRY["dynamodb.set_capacity"], context(acme()), inputs)
    assert outcome.figures["plan"] == "skip" and "already 100 RCU / 50 WCU" in outcome.summary
    assert outcome.outputs["changed"] is False and outcome.outputs["current"] == outcome.outputs["previous"]


def test_a_capacity_beyond_the_partners_limit_is_where_the_run_would_fail(aws):
    partner = acme(capacity=CapacityLimits(max_write_units=100))
    inputs = {"table": "acme-orders", "mode": "provisioned", "write_units": 500}
    with pytest.raises(ActionError) as refused:
        preview(REGISTRY["dynamodb.set_capacity"], context(partner), inputs)
    assert refused.value.code == "CapacityLimitExceeded"


def test_a_replay_counts_what_it_would_write_and_what_is_already_in_place(aws):
    aws.put_item(TableName="acme-orders", Item={"pk": {"S": "C1"}, "sk": {"S": "A"}, "version": {"N": "5"}})
    aws.put_item(TableName="acme-orders", Item={"pk": {"S": "C2"}, "sk": {"S": "A"}, "version": {"N": "1"}})
    missed(aws, "r1", "C1", 5)  # in place: the table has version 5
    missed(aws, "r2", "C1", 4)  # in place: older than the table's
    missed(aws, "r3", "C2", 2)  # newer than the table's: written
    missed(aws, "r4", "C3", 1)  # missing: written
    outcome = preview(REGISTRY["dynamodb.replay"], context(acme()), {"table": "acme-orders"})
    assert outcome.figures["plan"] == "approval"
    assert (outcome.figures["missed_writes"], outcome.figures["to_write"], outcome.figures["in_place"]) == (
        4,
        2,
        2,
    )
    assert outcome.outputs["applied"] == 2 and outcome.outputs["skipped_duplicates"] == 2
    assert outcome.outputs["failed"] == 0 and outcome.outputs["budget_wcu"] == 25.0
    assert "2 to write, 2 already in place" in outcome.summary and "≤ 25 writes/s" in outcome.summary
    assert (
        aws.get_item(TableName="acme-orders", Key={"pk": {"S": "C3"}, "sk": {"S": "A"}}).get("Item") is None
    )
    assert aws.scan(TableName="acme-failed-writes")["Count"] == 4


def test_an_empty_store_is_a_skip(aws):
    outcome = preview(REGISTRY["dynamodb.replay"], context(acme()), {"table": "acme-orders"})
    assert outcome.figures["plan"] == "skip" and "empty" in outcome.summary


def test_an_sqs_store_is_counted_approximately_and_never_received(aws, monkeypatch):
    # moto has no Contributor Insights: the table has none enabled, as most do
    monkeypatch.setattr(
        type(REGISTRY["dynamodb.hot_keys"]), "_from_contributor_insights", staticmethod(lambda *a: None)
    )
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="acme-missed")["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"item": {"pk": {"S": f"C{i}"}}, "version": 1}))
    partner = acme(failed_requests=FailedRequestStore("sqs", "acme-missed", "orders"))
    replay = preview(REGISTRY["dynamodb.replay"], context(partner), {"table": "acme-orders"})
    assert "about 3 missed writes" in replay.summary and "approximate" in replay.summary
    assert replay.figures["count"] == "approximate"
    hot = preview(REGISTRY["dynamodb.hot_keys"], context(partner), {"table": "acme-orders"})
    assert hot.figures["plan"] == "run" and "approximate" in hot.summary and hot.outputs["top"] == []
    visible = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "3", "nothing was received"


def test_wait_notify_and_an_approval_gate_say_what_they_would_do():
    ctx = context(acme())
    wait = preview(REGISTRY["wait"], ctx, {"seconds": 90, "reason": "let capacity settle"})
    assert wait.status == "succeeded" and wait.outputs == {"waited_seconds": 90.0}
    assert wait.summary == "would wait 90s (let capacity settle); a plan does not wait"
    note = preview(REGISTRY["notify"], ctx, {"text": "capacity raised"})
    assert note.summary == "would post: capacity raised" and note.figures["plan"] == "run"
    gate = preview(REGISTRY["approval"], ctx, {"effect": "page the partner"})
    assert gate.figures["plan"] == "approval" and gate.figures["effect"] == "page the partner"


def test_reads_run_for_real_and_a_succeed_step_ends_the_run(aws):
    described = preview(REGISTRY["dynamodb.describe"], context(acme()), {"table": "acme-orders"})
    assert described.figures["plan"] == "run" and described.outputs["write_units"] == 50
    end = preview(REGISTRY["succeed"], context(acme()), {"message": "nothing to do"})
    assert end.figures["plan"] == "end" and end.summary == "the run would end here: nothing to do"
    with pytest.raises(ActionError) as failed:
        preview(REGISTRY["check"], context(acme()), {"that": False, "message": "writes failed"})
    assert failed.value.code == "CheckFailed"


@pytest.mark.parametrize(
    ("service", "call", "kwargs"),
    [
        ("dynamodb", "put_item", {"TableName": "acme-orders", "Item": {"pk": {"S": "x"}, "sk": {"S": "y"}}}),
        ("dynamodb", "update_table", {"TableName": "acme-orders", "BillingMode": "PAY_PER_REQUEST"}),
        ("dynamodb", "execute_statement", {"Statement": "DELETE FROM \"acme-orders\" WHERE pk='x'"}),
        ("sqs", "receive_message", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q"}),
        (
            "sqs",
            "delete_message",
            {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q", "ReceiptHandle": "r"},
        ),
    ],
)
def test_a_plans_session_refuses_every_call_that_is_not_a_read_before_it_is_sent(aws, service, call, kwargs):
    session = PartnerSession(acme(), None, PlanGuard())
    with pytest.raises(ActionError) as refused:
        getattr(session.client(service), call)(**kwargs)
    assert refused.value.code == "PlanRefusesWrite" and "not a read" in str(refused.value)
    table = aws.describe_table(TableName="acme-orders")["Table"]
    assert table["ItemCount"] == 0 and table["ProvisionedThroughput"]["WriteCapacityUnits"] == 50


def test_a_plans_session_lets_reads_through(aws):
    session = PartnerSession(acme(), None, PlanGuard())
    ddb = session.client("dynamodb")
    assert ddb.describe_table(TableName="acme-orders")["Table"]["TableName"] == "acme-orders"
    assert ddb.scan(TableName="acme-orders")["Count"] == 0
    assert ddb.batch_get_item(RequestItems={"acme-orders": {"Keys": [{"pk": {"S": "x"}, "sk": {"S": "y"}}]}})[
        "Responses"
    ] == {"acme-orders": []}
