"""The local event source mapping fails, retries and discards as Lambda's does for DynamoDB streams.

Each test drives StreamDelivery over a real stream (moto in-process) with a function that fails
in a controlled way, under the settings template.yaml gives its stream consumers. The rules come
from the Lambda developer guide:
- "Error handling" for DynamoDB (awsdocs/aws-lambda-developer-guide, doc_source/with-ddb.md):
  retries until the records expire, exceed the maximum age or reach the retry quota; splitting a
  batch does not count towards the retry quota; the invocation record sent on failure.
- "Lambda parameters for Amazon DynamoDB event source mappings" (services-ddb-params): -1 means
  infinite for MaximumRetryAttempts (0 to 10,000) and MaximumRecordAgeInSeconds (up to 604,800;
  the stream keeps records 24 hours).
- "Configuring partial batch response with DynamoDB and Lambda"
  (services-ddb-batchfailurereporting): the lowest reported sequence number is the checkpoint;
  what counts as complete success and as complete failure.
Record age is driven by a clock the test moves, so an hour passes in no time.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.local.streams import StreamDelivery, retry_position

pytestmark = pytest.mark.integration

FUNCTION = "WorkerFunction"
REPO = Path(__file__).resolve().parents[2]
# The invocation record of the developer guide's "Example Invocation Record" (with-ddb.md), by keys.
AWS_INVOCATION_RECORD = {
    "requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
    "responseContext": {"statusCode", "executedVersion", "functionError"},
    "version": None,
    "timestamp": None,
    "DDBStreamBatchInfo": {
        "shardId",
        "startSequenceNumber",
        "endSequenceNumber",
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
        "batchSize",
        "streamArn",
    },
}
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass(frozen=True)
class Mapping:
    """A `Type: DynamoDB` event's properties, as StreamDelivery reads them from template.yaml."""

    logical_id: str = FUNCTION
    batch_size: int = 10
    maximum_batching_window_seconds: int = 0
    filter_patterns: tuple[dict[str, Any], ...] = ()
    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: int = -1
    bisect_on_error: bool = False
    report_batch_item_failures: bool = True
    timeout_seconds: int = 30
    parallelization_factor: int = 1


class Clock:
    """Epoch seconds that a test moves forward: records age by it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


Respond = Callable[[list[str], list[dict[str, Any]]], Any]


class Function:
    """A stream consumer that answers as `respond` says (or raises), and keeps every batch's keys."""

    def __init__(self, respond: Respond, clock: Clock | None = None, runs_for: float = 0.0) -> None:
        self.respond = respond
        self.clock = clock
        self.runs_for = runs_for  # seconds of the test's clock each invocation takes
        self.batches: list[list[str]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        records = event["Records"]
        names = [r["dynamodb"]["Keys"]["pk"]["S"] for r in records]
        self.batches.append(names)
        if self.clock is not None:
            self.clock.advance(self.runs_for)
        return self.respond(names, records)


def fails_with(poison: str) -> Respond:
    """Raises for every batch holding `poison`; succeeds otherwise."""

    def respond(names: list[str], records: list[dict[str, Any]]) -> None:
        if poison in names:
            raise RuntimeError(f"cannot process {poison}")

    return respond


def reports(*failed: str) -> Respond:
    """A partial batch response naming the records of `failed` that are in the batch."""

    def respond(names: list[str], records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
                for name, r in zip(names, records, strict=True)
                if name in failed
            ]
        }

    return respond


def in_turn(*responses: Respond) -> Respond:
    """The first invocation answers as the first of `responses`, the next as the second, ..."""
    remaining = iter(responses)

    def respond(names: list[str], records: list[dict[str, Any]]) -> Any:
        return next(remaining)(names, records)

    return respond


@dataclass
class Stream:
    dynamodb: Any
    streams: Any
    sqs: Any
    table: str
    arn: str
    queue_url: str

    def put(self, *names: str) -> None:
        for name in names:
            self.dynamodb.put_item(TableName=self.table, Item={"pk": {"S": name}, "sk": {"S": "STATE"}})

    def shard_id(self) -> str:
        shards = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        return str(shards[0]["ShardId"])

    def sequence_numbers(self) -> dict[str, str]:
        shard = self.streams.get_shard_iterator(
            StreamArn=self.arn, ShardId=self.shard_id(), ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = self.streams.get_records(ShardIterator=shard)["Records"]
        return {r["dynamodb"]["Keys"]["pk"]["S"]: r["dynamodb"]["SequenceNumber"] for r in records}

    def on_failure_messages(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


@pytest.fixture
def stream(aws: None) -> Stream:
    import boto3

    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="semantics",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    arn = dynamodb.describe_table(TableName="semantics")["Table"]["LatestStreamArn"]
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="stream-failures")["QueueUrl"]
    return Stream(dynamodb, boto3.client("dynamodbstreams"), sqs, "semantics", arn, queue_url)


@pytest.fixture
def deliveries() -> Iterator[list[StreamDelivery]]:
    started: list[StreamDelivery] = []
    yield started
    for delivery in started:
        delivery.stop()


@pytest.fixture
def deliver(stream: Stream, deliveries: list[StreamDelivery]) -> Callable[..., StreamDelivery]:
    """Starts a mapping on the stream (records written before it reach the function as one read)
    and waits until everything written so far is settled."""

    def start(mapping: Mapping, function: Function, clock: Clock | None = None) -> StreamDelivery:
        delivery = StreamDelivery(
            stream.streams,
            stream.arn,
            mapping,
            handler=function,
            sqs_client=stream.sqs,
            on_failure_queue_url=stream.queue_url,
            clock=clock or time.time,
            retry_delay=0.0,
        )
        deliveries.append(delivery.start())
        assert delivery.drain(timeout=20), f"records still in flight: {delivery.backlog()}"
        return delivery

    return start


# -- MaximumRetryAttempts -------------------------------------------------------------------------


def test_a_failing_batch_is_invoked_once_and_retried_maximum_retry_attempts_times_then_discarded(
    stream, deliver
):
    stream.put("a", "poison", "c")
    function = Function(fails_with("poison"))

    delivery = deliver(Mapping(maximum_retry_attempts=2, report_batch_item_failures=False), function)

    assert function.batches == [["a", "poison", "c"]] * 3  # the first invocation and 2 retries
    (message,) = delivery.stats.on_failure
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["DDBStreamBatchInfo"]["batchSize"] == 3
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in delivery.stats.discarded] == ["a", "poison", "c"]
    assert delivery.stats.retries == 2


def test_zero_retry_attempts_discard_a_failing_batch_after_its_first_invocation(stream, deliver):
    stream.put("poison")
    function = Function(fails_with("poison"))

    delivery = deliver(Mapping(maximum_retry_attempts=0), function)

    assert function.batches == [["poison"]]
    assert delivery.stats.on_failure[0]["requestContext"]["approximateInvokeCount"] == 1


def test_delivery_moves_on_after_a_discard_and_keeps_the_order_of_what_follows(stream, deliver):
    stream.put("poison", "b", "c")
    function = Function(fails_with("poison"))

    deliver(Mapping(batch_size=1, maximum_retry_attempts=1), function)

    assert function.batches == [["poison"], ["poison"], ["b"], ["c"]]


@pytest.mark.parametrize(
    ("field", "value"), [("maximum_retry_attempts", -2), ("maximum_retry_attempts", 10_001)]
)
def test_a_retry_quota_lambda_refuses_is_refused(stream, field, value):
    with pytest.raises(ValueError, match="MaximumRetryAttempts"):
        StreamDelivery(stream.streams, stream.arn, Mapping(**{field: value}), handler=Function(reports()))


@pytest.mark.parametrize("age", [0, 59, 604_801, -2])
def test_a_maximum_record_age_lambda_refuses_is_refused(stream, age):
    with pytest.raises(ValueError, match="MaximumRecordAgeInSeconds"):
        StreamDelivery(
            stream.streams, stream.arn, Mapping(maximum_record_age_seconds=age), handler=Function(reports())
        )


# -- MaximumRecordAgeInSeconds --------------------------------------------------------------------


def test_a_record_older_than_the_maximum_age_is_discarded_before_its_next_retry(stream, deliver):
    stream.put("poison")
    clock = Clock()
    function = Function(fails_with("poison"), clock, runs_for=25)

    delivery = deliver(Mapping(maximum_retry_attempts=100, maximum_record_age_seconds=60), function, clock)

    assert function.batches == [["poison"]] * 3  # at ages 0, 25 and 50 s; at 75 s it is discarded
    (message,) = delivery.stats.on_failure
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["responseContext"]["functionError"] == "Unhandled"


def test_infinite_retries_go_on_until_the_record_leaves_the_streams_24_hour_retention(stream, deliver):
    stream.put("poison")
    clock = Clock()
    function = Function(fails_with("poison"), clock, runs_for=3 * 3600)

    delivery = deliver(Mapping(maximum_retry_attempts=-1, maximum_record_age_seconds=-1), function, clock)

    assert len(function.batches) == 8  # ages 0 h, 3 h, ... 21 h; past 24 h it is gone
    assert delivery.stats.on_failure[0]["requestContext"]["condition"] == "RecordAgeExceeded"
    assert delivery.stats.retries == 7


def test_infinite_retries_stop_at_the_maximum_record_age(stream, deliver):
    stream.put("poison")
    clock = Clock()
    function = Function(fails_with("poison"), clock, runs_for=600)

    delivery = deliver(Mapping(maximum_retry_attempts=-1, maximum_record_age_seconds=3600), function, clock)

    assert len(function.batches) == 6  # ages 0, 10, ... 50 minutes
    assert delivery.stats.on_failure[0]["requestContext"]["condition"] == "RecordAgeExceeded"


def test_records_already_too_old_when_read_are_discarded_without_an_invocation(stream, deliver):
    stream.put("stale")
    clock = Clock()
    clock.advance(120)
    function = Function(reports())

    delivery = deliver(Mapping(maximum_record_age_seconds=60), function, clock)
    clock.advance(-120)
    stream.put("fresh")
    assert delivery.drain(timeout=20)

    assert function.batches == [["fresh"]]
    (message,) = delivery.stats.on_failure
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert message["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in message, "no invocation answered for these records"


# -- BisectBatchOnFunctionError -------------------------------------------------------------------


def test_bisect_splits_down_to_the_poison_record_and_every_other_record_succeeds_once(stream, deliver):
    names = [f"r{i}" for i in range(8)]
    stream.put(*names)
    function = Function(fails_with("r5"))

    delivery = deliver(Mapping(batch_size=8, bisect_on_error=True, maximum_retry_attempts=1), function)

    assert (
        function.batches
        == [
            names,  # fails: split in two
            names[:4],
            names[4:],  # fails: split
            ["r4", "r5"],  # fails: split
            ["r4"],
            ["r5"],  # fails: a batch of one is retried, counted
            ["r5"],  # fails again: 1 retry spent
            ["r6", "r7"],
        ]
    )
    succeeded = [name for batch in function.batches if "r5" not in batch for name in batch]
    assert sorted(succeeded) == sorted(set(names) - {"r5"})
    (message,) = delivery.stats.on_failure
    assert message["DDBStreamBatchInfo"]["batchSize"] == 1
    assert message["DDBStreamBatchInfo"]["startSequenceNumber"] == stream.sequence_numbers()["r5"]
    assert message["requestContext"]["approximateInvokeCount"] == 5  # r5 was in 5 invocations


def test_splitting_a_batch_does_not_count_towards_the_retry_quota(stream, deliver):
    names = [f"r{i}" for i in range(8)]
    stream.put(*names)
    function = Function(fails_with("r2"))

    delivery = deliver(Mapping(batch_size=8, bisect_on_error=True, maximum_retry_attempts=0), function)

    assert function.batches == [names, names[:4], ["r0", "r1"], ["r2", "r3"], ["r2"], ["r3"], names[4:]]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in delivery.stats.discarded] == ["r2"]
    assert delivery.stats.retries == 0


def test_without_bisect_a_function_error_retries_the_whole_batch(stream, deliver):
    stream.put("a", "poison")
    function = Function(fails_with("poison"))

    deliver(Mapping(bisect_on_error=False, maximum_retry_attempts=1), function)

    assert function.batches == [["a", "poison"], ["a", "poison"]]


# -- ReportBatchItemFailures ----------------------------------------------------------------------


def test_a_partial_batch_response_checkpoints_before_the_failed_record_and_retries_from_it(stream, deliver):
    stream.put("a", "b", "c", "d")
    function = Function(in_turn(reports("c"), reports()))

    delivery = deliver(Mapping(maximum_retry_attempts=3), function)

    assert function.batches == [["a", "b", "c", "d"], ["c", "d"]]
    assert delivery.stats.on_failure == []


def test_the_lowest_reported_sequence_number_is_the_checkpoint(stream, deliver):
    stream.put("a", "b", "c", "d")
    function = Function(in_turn(reports("d", "b"), reports()))

    deliver(Mapping(maximum_retry_attempts=3), function)

    assert function.batches == [["a", "b", "c", "d"], ["b", "c", "d"]]


def test_a_record_reported_failed_every_time_spends_the_retries_and_its_batch_is_discarded(stream, deliver):
    stream.put("a", "b", "c", "d")
    function = Function(reports("b"))

    delivery = deliver(Mapping(bisect_on_error=True, maximum_retry_attempts=2), function)

    assert function.batches == [["a", "b", "c", "d"], ["b", "c", "d"], ["b", "c", "d"]]
    (message,) = delivery.stats.on_failure
    sequence = stream.sequence_numbers()
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    batch = message["DDBStreamBatchInfo"]
    assert (batch["startSequenceNumber"], batch["endSequenceNumber"]) == (sequence["b"], sequence["d"])
    assert batch["batchSize"] == 3


@pytest.mark.parametrize(
    "response",
    [None, {}, {"batchItemFailures": None}, {"batchItemFailures": []}, {"statusCode": 200}],
    ids=["null", "empty", "null-list", "empty-list", "no-list"],
)
def test_an_empty_or_missing_failure_list_is_complete_success(stream, deliver, response):
    stream.put("a", "b")
    function = Function(lambda names, records: response)

    delivery = deliver(Mapping(maximum_retry_attempts=0), function)

    assert function.batches == [["a", "b"]]
    assert delivery.stats.on_failure == []


MALFORMED: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
    "not-an-object": lambda records: ["a"],
    "list-not-a-list": lambda records: {"batchItemFailures": {"itemIdentifier": "1"}},
    "empty-identifier": lambda records: {"batchItemFailures": [{"itemIdentifier": ""}]},
    "null-identifier": lambda records: {"batchItemFailures": [{"itemIdentifier": None}]},
    "wrong-key": lambda records: {
        "batchItemFailures": [{"itemIdentifer": records[1]["dynamodb"]["SequenceNumber"]}]
    },
    "unknown-record": lambda records: {"batchItemFailures": [{"itemIdentifier": "99999999999"}]},
}


@pytest.mark.parametrize("malformed", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_partial_response_fails_the_whole_batch_which_is_retried_not_split(
    stream, deliver, malformed
):
    stream.put("a", "b", "c")
    answers = iter([malformed, lambda records: None])
    function = Function(lambda names, records: next(answers)(records))

    delivery = deliver(Mapping(bisect_on_error=True, maximum_retry_attempts=1), function)

    assert function.batches == [["a", "b", "c"], ["a", "b", "c"]]
    assert delivery.stats.retries == 1 and delivery.stats.on_failure == []


def test_a_partial_response_is_ignored_unless_the_mapping_reports_batch_item_failures(stream, deliver):
    stream.put("a", "b")
    function = Function(reports("a"))

    deliver(Mapping(report_batch_item_failures=False, maximum_retry_attempts=0), function)

    assert function.batches == [["a", "b"]]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, None),
        ({"batchItemFailures": []}, None),
        ({"batchItemFailures": [{"itemIdentifier": "300"}, {"itemIdentifier": "200"}]}, 1),
        ({"batchItemFailures": [{"itemIdentifier": "100"}]}, 0),
        ({"batchItemFailures": [{"itemIdentifier": "300"}, {"itemIdentifier": "400"}]}, 0),
        ("ok", 0),
    ],
)
def test_retry_position_of_a_partial_batch_response(response, expected):
    batch = [{"dynamodb": {"SequenceNumber": s}} for s in ("100", "200", "300")]
    assert retry_position(response, batch) == expected


# -- the on-failure destination's invocation record -------------------------------------------------


def test_the_on_failure_record_has_the_documented_shape_and_reaches_the_queue(stream, deliver):
    stream.put("a", "poison")
    function = Function(fails_with("poison"))

    delivery = deliver(Mapping(maximum_retry_attempts=1, report_batch_item_failures=False), function)

    (queued,) = stream.on_failure_messages()
    assert queued == delivery.stats.on_failure[0]
    assert set(queued) == set(AWS_INVOCATION_RECORD), "metadata only: the records are not included"
    for part, keys in AWS_INVOCATION_RECORD.items():
        if keys is not None:
            assert set(queued[part]) == keys, part
    request, response, batch = (
        queued["requestContext"],
        queued["responseContext"],
        queued["DDBStreamBatchInfo"],
    )
    assert request["functionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"
    assert request["condition"] == "RetryAttemptsExhausted" and request["approximateInvokeCount"] == 2
    assert isinstance(request["requestId"], str) and request["requestId"]
    assert response == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert queued["version"] == "1.0" and ISO_MILLIS.match(queued["timestamp"])
    sequence = stream.sequence_numbers()
    assert batch == {
        "shardId": stream.shard_id(),
        "startSequenceNumber": sequence["a"],
        "endSequenceNumber": sequence["poison"],
        "approximateArrivalOfFirstRecord": batch["approximateArrivalOfFirstRecord"],
        "approximateArrivalOfLastRecord": batch["approximateArrivalOfLastRecord"],
        "batchSize": 2,
        "streamArn": stream.arn,
    }
    assert ISO_SECONDS.match(batch["approximateArrivalOfFirstRecord"])
    assert ISO_SECONDS.match(batch["approximateArrivalOfLastRecord"])


# -- the event the function gets ---------------------------------------------------------------------


def test_the_function_gets_records_shaped_as_lambdas_dynamodb_event(stream, deliver):
    """Compared with events/stream-modify.json, which has the keys of AWS's own samples (SAM CLI's
    generated DynamoDB update event, Powertools' tests/events/dynamoStreamEvent.json)."""
    sample = json.loads((REPO / "events" / "stream-modify.json").read_text())["Records"][0]
    stream.put("a")
    stream.dynamodb.put_item(
        TableName=stream.table, Item={"pk": {"S": "a"}, "sk": {"S": "STATE"}, "status": {"S": "RUNNING"}}
    )
    got: list[dict[str, Any]] = []
    function = Function(lambda names, records: got.extend(records))

    deliver(Mapping(), function)

    insert, modify = got
    assert (insert["eventName"], modify["eventName"]) == ("INSERT", "MODIFY")
    assert set(modify) == set(sample)
    assert set(modify["dynamodb"]) == set(sample["dynamodb"])
    assert modify["eventSource"] == "aws:dynamodb" and modify["eventSourceARN"] == stream.arn
    assert isinstance(modify["dynamodb"]["ApproximateCreationDateTime"], int | float)


# -- MaximumBatchingWindowInSeconds ----------------------------------------------------------------


def start_empty(
    stream: Stream, mapping: Mapping, function: Function, started: list[StreamDelivery]
) -> StreamDelivery:
    delivery = StreamDelivery(stream.streams, stream.arn, mapping, handler=function, retry_delay=0.0)
    started.append(delivery.start())
    assert delivery.drain(timeout=20)
    return delivery


@pytest.mark.parametrize(("window", "batches"), [(0, [["a"], ["b", "c"]]), (1, [["a", "b", "c"]])])
def test_the_batching_window_gathers_records_that_arrive_within_it(stream, deliveries, window, batches):
    function = Function(reports())
    delivery = start_empty(stream, Mapping(maximum_batching_window_seconds=window), function, deliveries)

    stream.put("a")
    time.sleep(0.4)
    stream.put("b", "c")
    assert delivery.drain(timeout=20)

    assert function.batches == batches


def test_a_full_batch_does_not_wait_for_the_batching_window(stream, deliveries):
    function = Function(reports())
    delivery = start_empty(
        stream, Mapping(batch_size=2, maximum_batching_window_seconds=300), function, deliveries
    )
    started = time.monotonic()

    stream.put("a", "b")
    assert delivery.drain(timeout=20)

    assert function.batches == [["a", "b"]] and time.monotonic() - started < 5


# -- what the pipeline relies on --------------------------------------------------------------------


def lane(name: str, lanes: int) -> int:
    """The lane a key's records take: streams.py spreads keys by the CRC-32 of their JSON."""
    keys = json.dumps({"pk": {"S": name}, "sk": {"S": "STATE"}}, sort_keys=True)
    return zlib.crc32(keys.encode()) % lanes


def test_a_poison_record_holds_up_only_its_own_partition_keys_lane(stream, deliver):
    assert lane("poison", 2) != lane("a", 2)
    stream.put("poison", "a")

    def respond(names: list[str], records: list[dict[str, Any]]) -> None:
        if "poison" in names:
            time.sleep(0.05)
            raise RuntimeError("cannot process poison")

    function = Function(respond)

    delivery = deliver(Mapping(batch_size=2, parallelization_factor=2, maximum_retry_attempts=3), function)

    assert function.batches.count(["poison"]) == 4 and function.batches.count(["a"]) == 1
    last_poison = len(function.batches) - 1 - function.batches[::-1].index(["poison"])
    assert function.batches.index(["a"]) < last_poison, "a waited behind poison's retries"
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in delivery.stats.discarded] == ["poison"]
