"""The fault injector: DynamoDB's own answers for capacity and injected faults, at before-send."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from hypothesis import given
from hypothesis import strategies as st

from bot.partners.faults import Capacity, FaultInjector, FaultSpec, FaultSpecError

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(aws):
    c = boto3.client("dynamodb", config=NO_RETRIES)
    c.create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return c


def put(client, pk: str) -> str:
    try:
        client.put_item(TableName="orders", Item={"pk": {"S": pk}})
    except ClientError as error:
        return error.response["Error"]["Code"]
    return "ok"


def test_fault_list_reads_shares_and_percentages():
    spec = FaultSpec.parse("throttle=0.3, timeout=5%")
    assert (spec.throttle, spec.timeout, spec.error) == (0.3, 0.05, 0.0)
    assert FaultSpec.from_dict(spec.as_dict()) == spec
    assert not FaultSpec.parse("") and str(FaultSpec()) == "no faults"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("slow=0.3", "valid faults: throttle="),
        ("throttle", "valid faults"),
        ("throttle=lots", "needs a share like 0.3 or 30%"),
        ("throttle=1.5", "between 0 and 1"),
        ("throttle=0.1,throttle=0.2", "given twice"),
    ],
)
def test_a_bad_fault_list_says_what_is_valid(text, says):
    with pytest.raises(FaultSpecError, match=says):
        FaultSpec.parse(text)


@given(st.text(max_size=60))
def test_any_fault_text_parses_or_says_what_is_wrong(text):
    try:
        FaultSpec.parse(text)
    except FaultSpecError as error:
        assert str(error)


def test_a_table_past_its_write_capacity_is_throttled_like_dynamodb(client):
    clock = Clock()
    injector = FaultInjector(capacity={"orders": Capacity(write_units=10, burst_seconds=1)}, clock=clock)
    injector.install(client)
    answers = [put(client, f"k{i}") for i in range(15)]
    assert answers[:10] == ["ok"] * 10
    assert set(answers[10:]) == {"ProvisionedThroughputExceededException"}
    clock.now += 1.0  # a second later the bucket has refilled
    assert put(client, "later") == "ok"
    assert injector.stats.throttled_by_capacity == 5 and injector.stats.consumed_write_units == 11


def test_one_hot_partition_key_is_capped_below_the_table(client):
    clock = Clock()
    injector = FaultInjector(capacity={"orders": Capacity(write_units=100_000, burst_seconds=1)}, clock=clock)
    injector.install(client)
    hot = [put(client, "HOT") for _ in range(1_100)]
    assert hot.count("ok") == 1_000 and hot.count("ProvisionedThroughputExceededException") == 100
    assert put(client, "cold") == "ok"


def test_injected_faults_come_at_their_rates_and_leave_other_tables_alone(client):
    injector = FaultInjector(FaultSpec.parse("throttle=0.3,timeout=0.1,error=0.1"), tables={"orders"}, seed=3)
    injector.install(client)
    answers = []
    for i in range(400):
        try:
            answers.append(put(client, f"k{i}"))
        except ReadTimeoutError:
            answers.append("timeout")
    share = {a: answers.count(a) / len(answers) for a in set(answers)}
    assert 0.22 < share["ProvisionedThroughputExceededException"] < 0.38
    assert 0.05 < share["timeout"] < 0.15 and 0.05 < share["InternalServerError"] < 0.15
    assert injector.stats.injected == len(answers) - answers.count("ok")
    client.create_table(
        TableName="other",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(50):
        client.put_item(TableName="other", Item={"pk": {"S": str(i)}})


def test_botocore_retries_absorb_injected_throttling(client):
    retried = boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 8}))
    injector = FaultInjector(FaultSpec(throttle=0.2), seed=5)
    injector.install(retried)
    for i in range(12):
        retried.put_item(TableName="orders", Item={"pk": {"S": f"r{i}"}})
    assert injector.stats.throttled > 0
    assert retried.scan(TableName="orders", Select="COUNT")["Count"] == 12
