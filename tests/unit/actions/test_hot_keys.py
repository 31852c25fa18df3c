"""`dynamodb.hot_keys`: Contributor Insights where the table has it, else a sample of failed writes."""

from __future__ import annotations

import dataclasses
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from bot.actions.base import ActionContext
from bot.actions.replay import HOT_KEYS
from bot.catalog import load_catalog

T = 1_795_000_000.0


class Session:
    def __init__(self, **clients: Any) -> None:
        self.clients = clients

    def client(self, service: str) -> Any:
        return self.clients[service]


def context(session: Session) -> ActionContext:
    partner = load_catalog().partners["partner-acme"]
    return ActionContext(
        execution_id="rb-hotkeystst",
        step_id="hot_keys",
        attempt=1,
        idempotency_key="k",
        partner=partner,
        aws=session,
        params={},
        checkpoint=None,
        clock=lambda: T,  # type: ignore[arg-type]
    )


def test_enabled_contributor_insights_name_the_most_throttled_keys():
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    with Stubber(ddb) as d, Stubber(cloudwatch) as c:
        d.add_response(
            "describe_contributor_insights",
            {
                "TableName": "acme-orders",
                "ContributorInsightsStatus": "ENABLED",
                "ContributorInsightsRuleList": [
                    "DynamoDBContributorInsights-PKC-acme-orders-1700000000000",
                    "DynamoDBContributorInsights-PKT-acme-orders-1700000000000",
                ],
            },
            {"TableName": "acme-orders"},
        )
        c.add_response(
            "get_insight_rule_report",
            {
                "KeyLabels": ["pk"],
                "AggregationStatistic": "Sum",
                "AggregateValue": 1000.0,
                "ApproximateUniqueCount": 40,
                "Contributors": [
                    {"Keys": ["CUSTOMER#0001"], "ApproximateAggregateValue": 620.0, "Datapoints": []},
                    {"Keys": ["CUSTOMER#0002"], "ApproximateAggregateValue": 150.0, "Datapoints": []},
                ],
            },
            {
                "RuleName": "DynamoDBContributorInsights-PKT-acme-orders-1700000000000",
                "StartTime": ANY,
                "EndTime": ANY,
                "Period": 60,
                "MaxContributorCount": 5,
                "OrderBy": "Sum",
            },
        )
        outcome = HOT_KEYS.run(
            context(Session(dynamodb=ddb, cloudwatch=cloudwatch)), {"table": "acme-orders"}
        )
    assert outcome.outputs["top"][0] == {"key": "CUSTOMER#0001", "count": 620}
    assert outcome.outputs["hottest_share"] == 0.62
    assert outcome.outputs["source"].startswith("Contributor Insights (throttled keys")
    assert "hottest key CUSTOMER#0001 has 62% of 1,000 throttled requests" in outcome.summary


@pytest.mark.parametrize("status", ["DISABLED", "FAILED"])
def test_without_insights_the_failed_writes_are_sampled(aws, status):
    from bot.demo import seed_demo

    seed_demo(boto3.session.Session())
    real = boto3.client("dynamodb")
    stubbed = boto3.client("dynamodb")
    with Stubber(stubbed) as d:
        d.add_response(
            "describe_contributor_insights", {"TableName": "acme-orders", "ContributorInsightsStatus": status}
        )

        class Mixed:
            def __getattr__(self, name: str) -> Any:
                return getattr(stubbed if name == "describe_contributor_insights" else real, name)

        outcome = HOT_KEYS.run(context(Session(dynamodb=Mixed())), {"table": "acme-orders", "sample": 300})
    assert outcome.outputs["source"] == "failed-request store sample"
    assert outcome.outputs["sampled"] == 300
    assert outcome.outputs["top"][0]["key"] == "CUSTOMER#0001"
    assert dataclasses.is_dataclass(outcome)


def test_sampling_an_sqs_store_leaves_every_message_for_the_replay_that_follows(aws):
    from bot.demo import SeedReport, _missed_globex, _table

    globex = load_catalog().partners["partner-globex"]
    session = boto3.session.Session()
    ddb, sqs = session.client("dynamodb"), session.client("sqs")
    _table(
        ddb,
        SeedReport(),
        "globex-payments",
        [("account_id", "S"), ("payment_id", "S")],
        provisioned=(100, 100),
    )
    _missed_globex(sqs, "globex-missed-writes", 30, None, T)
    ctx = dataclasses.replace(context(Session(dynamodb=ddb, sqs=sqs)), partner=globex)
    top, sampled = HOT_KEYS._from_failed_requests(ctx, "globex-payments", 1000, 5)
    assert sampled == 30, "each message counted once, though a peek sees it again"
    assert sum(t["count"] for t in top) <= 30
    url = sqs.get_queue_url(QueueName="globex-missed-writes")["QueueUrl"]
    visible = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "30", "nothing hidden from a replay"
