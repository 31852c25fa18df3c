"""DynamoDB stream records delivered to a stream consumer as Lambda's event source mapping would.

Real records from the embedded engine's `dynamodbstreams` API, filtered by the consumer's
FilterCriteria, batched in order up to BatchSize (waiting up to MaximumBatchingWindowInSeconds for
a fuller batch), handed to the handler in Lambda's event format.
With a ParallelizationFactor of N, records are spread over N lanes by partition key, each
delivered by its own invocations in order (Lambda's guarantee: order per partition key, not
across keys). Faults can be injected (duplicates, split batches).

Failures follow the Lambda developer guide ("Error handling" for DynamoDB event sources, and
"Configuring partial batch response with DynamoDB and Lambda"):
- A raised error fails the whole batch. With BisectBatchOnFunctionError it is split in two and
  each half delivered in order; "splitting a batch does not count towards the retry quota", so
  the halves carry the retries counted so far and a split adds none.
- With ReportBatchItemFailures, the checkpoint moves to the earliest reported record and the
  batch is retried from there (a retry, counted). A null or empty response or list is success; a
  response that is not an object, a list that is not a list, or an item without a known sequence
  number as its `itemIdentifier` fails the whole batch (retried, not split).
- Past MaximumRetryAttempts retries (-1: no limit), the records still failing are discarded.
  Before every invocation, leading records older than MaximumRecordAgeInSeconds (-1: the
  stream's 24-hour retention) are discarded. Either way delivery moves on, and the on-failure
  destination gets an invocation record (requestContext with the condition
  RetryAttemptsExhausted or RecordAgeExceeded, responseContext, version, timestamp,
  DDBStreamBatchInfo), never the records themselves.
The mapping's clock can be replaced, so tests age records in no time.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.local.filters import matches_any
from bot.local.lambda_context import LambdaContext

logger = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any], Any], Any]
STREAM_RETENTION_SECONDS = 24 * 60 * 60  # DynamoDB Streams keeps a record for 24 hours
RETRY_ATTEMPTS_RANGE = (-1, 10_000)  # CreateEventSourceMapping's MaximumRetryAttempts
RECORD_AGE_RANGE = (60, 604_800)  # MaximumRecordAgeInSeconds, when not -1
BATCHING_WINDOW_RANGE = (0, 300)  # MaximumBatchingWindowInSeconds
SHARD_REFRESH_SECONDS = 1.0  # how often the poller describes the stream while no shard closes


class Consumer(Protocol):
    @property
    def logical_id(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def filter_patterns(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def maximum_retry_attempts(self) -> int: ...
    @property
    def bisect_on_error(self) -> bool: ...
    @property
    def report_batch_item_failures(self) -> bool: ...
    @property
    def timeout_seconds(self) -> int: ...
    @property
    def parallelization_factor(self) -> int: ...


@dataclass
class DeliveryStats:
    records_seen: int = 0
    records_filtered_out: int = 0
    records_delivered: int = 0
    duplicates_delivered: int = 0
    invocations: int = 0
    batches_failed: int = 0
    retries: int = 0  # invocations that were retries (counted against MaximumRetryAttempts)
    sent_to_on_failure: int = 0
    on_failure: list[dict[str, Any]] = field(default_factory=list)  # the invocation records sent
    discarded: list[dict[str, Any]] = field(default_factory=list)  # the records they stand for


@dataclass(frozen=True)
class _Record:
    """A record as the mapping holds it: the event the function gets, the shard it came from, and
    when it was read (time.monotonic(), for the batching window)."""

    event: dict[str, Any]
    shard_id: str
    read_at: float = 0.0


@dataclass(frozen=True)
class Invocation:
    """What one invocation of the function made of its batch."""

    retry_from: int | None  # None: every record done; else the index the batch is retried from
    function_error: bool  # the function raised (Lambda's "Unhandled")
    request_id: str


@dataclass
class _Piece:
    """Consecutive records of a batch not yet settled, with what they went through: the retries
    counted against MaximumRetryAttempts and the invocations they were part of."""

    records: list[_Record]
    retries: int = 0
    invocations: int = 0
    last: Invocation | None = None
    retrying: bool = False  # its next invocation is a retry


@dataclass
class _Lane:
    """Records of the partition keys one concurrent invocation handles, in stream order."""

    pending: list[_Record] = field(default_factory=list)  # filtered, not yet acknowledged
    redeliver: list[_Record] = field(default_factory=list)  # injected duplicates, for a later batch
    busy: bool = False


class StreamDelivery:
    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        consumer: Consumer,
        *,
        handler: Handler,
        sqs_client: Any = None,
        on_failure_queue_url: str | None = None,
        duplicate_rate: float = 0.0,
        max_duplicates: int = 2,
        split_rate: float = 0.0,
        seed: int = 0,
        before_invoke: Callable[[list[dict[str, Any]]], None] | None = None,
        poll_interval: float = 0.02,
        clock: Callable[[], float] = time.time,
        retry_delay: float = 0.05,
        removed_by_service: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """`clock` gives epoch seconds: records age by it, and on-failure records are stamped with
        it. After the n-th counted retry the lane waits min(n * retry_delay, 0.5) seconds."""
        self.streams = streams
        self.stream_arn = stream_arn
        self.consumer = consumer
        self.handler = handler
        self.sqs = sqs_client
        self.queue_url = on_failure_queue_url
        self.duplicate_rate = duplicate_rate
        self.max_duplicates = max_duplicates
        self.split_rate = split_rate
        self.rng = random.Random(seed)
        self.before_invoke = before_invoke
        self.poll_interval = poll_interval
        self.clock = clock
        self.retry_delay = retry_delay
        # TTL deletes (the local stack's reaper): their REMOVE records carry the service identity.
        self.removed_by_service = removed_by_service
        self.maximum_retry_attempts = _within(
            "MaximumRetryAttempts", consumer.maximum_retry_attempts, *RETRY_ATTEMPTS_RANGE
        )
        # Not every consumer description carries it (the template's may not): -1, as Lambda's default.
        age = int(getattr(consumer, "maximum_record_age_seconds", -1))
        self.maximum_record_age = (
            -1 if age == -1 else _within("MaximumRecordAgeInSeconds", age, *RECORD_AGE_RANGE)
        )
        self.batching_window = _within(
            "MaximumBatchingWindowInSeconds",
            int(getattr(consumer, "maximum_batching_window_seconds", 0)),
            *BATCHING_WINDOW_RANGE,
        )
        self.function_arn = _function_arn(stream_arn, consumer.logical_id)
        self.stats = DeliveryStats()
        self._iterators: dict[str, str | None] = {}
        self._last_sequence: dict[str, str] = {}
        self._lanes = [_Lane() for _ in range(max(1, int(getattr(consumer, "parallelization_factor", 1))))]
        self._stop = threading.Event()
        self._empty_polls = 0  # complete polls in a row that found no record
        self._refreshed_at = float("-inf")  # when the stream's shards were last described
        self._thread: threading.Thread | None = None
        self._lane_threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> StreamDelivery:
        self._thread = threading.Thread(
            target=self._run, name=f"stream-{self.consumer.logical_id}", daemon=True
        )
        self._thread.start()
        for i, lane in enumerate(self._lanes):
            thread = threading.Thread(
                target=self._run_lane,
                args=(lane,),
                name=f"stream-{self.consumer.logical_id}-{i}",
                daemon=True,
            )
            thread.start()
            self._lane_threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in [self._thread, *self._lane_threads]:
            if thread:
                thread.join(timeout=10)

    def backlog(self) -> int:
        """Records filtered in but not yet handled (pending and injected duplicates)."""
        with self._lock:
            return sum(len(lane.pending) + len(lane.redeliver) for lane in self._lanes)

    def drain(self, timeout: float = 30.0) -> bool:
        """True once every record written so far was handled (or sent to the on-failure queue):
        the lanes are idle and two whole polls of the stream, begun after that, found nothing."""
        deadline = time.monotonic() + timeout
        quiet_from: int | None = None  # the empty-poll count when the lanes were last seen idle
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(lane.pending or lane.redeliver or lane.busy for lane in self._lanes)
                empty_polls = self._empty_polls
            if busy or (quiet_from is not None and empty_polls < quiet_from):
                quiet_from = None  # work arrived, or a poll found records since
            elif quiet_from is None:
                quiet_from = empty_polls
            elif empty_polls >= quiet_from + 2:
                return True
            time.sleep(0.02)
        return False

    # -- the polling loop --------------------------------------------------------------------

    def _run(self) -> None:
        """Poll the stream and spread what the filter keeps over the lanes."""
        while not self._stop.is_set():
            try:
                got = self._poll()
                with self._lock:
                    self._empty_polls = 0 if got else self._empty_polls + 1
                if not got:
                    self._stop.wait(self.poll_interval)
            except Exception:
                logger.exception("stream polling for %s failed; retrying", self.consumer.logical_id)
                self._stop.wait(0.2)

    def _run_lane(self, lane: _Lane) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    has_work = self._batch_ready(lane)
                    lane.busy = has_work
                if has_work:
                    self._deliver_next(lane)
                else:
                    self._stop.wait(self.poll_interval)
            except Exception:
                logger.exception("stream delivery to %s failed; retrying", self.consumer.logical_id)
                self._stop.wait(0.2)
            finally:
                with self._lock:
                    lane.busy = False

    def _batch_ready(self, lane: _Lane) -> bool:
        """Lambda invokes once BatchSize records are there or the oldest has waited
        MaximumBatchingWindowInSeconds (0: at once). Caller holds the lock."""
        if lane.redeliver:
            return True
        if not lane.pending:
            return False
        if len(lane.pending) >= self.consumer.batch_size:
            return True
        return time.monotonic() - lane.pending[0].read_at >= self.batching_window

    def _poll(self) -> int:
        # Shards change only when one closes (its children then take over): describing the stream
        # on every poll, 50 times a second per consumer, was half the embedded AWS's load.
        if time.monotonic() - self._refreshed_at >= SHARD_REFRESH_SECONDS:
            self._refresh_shards()
        got = 0
        for shard_id, iterator in list(self._iterators.items()):
            if iterator is None:
                continue
            try:
                answer = self.streams.get_records(ShardIterator=iterator, Limit=1000)
            except self.streams.exceptions.ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code not in {"TrimmedDataAccessException", "ExpiredIteratorException"}:
                    raise
                # Iterators expire (and DynamoDB Local trims): carry on after the last record we saw.
                self._iterators[shard_id] = self._iterator(shard_id)
                continue
            self._iterators[shard_id] = answer.get("NextShardIterator")
            if self._iterators[shard_id] is None:
                self._refreshed_at = float("-inf")  # read to its end: its children start next poll
            kept: list[_Record] = []
            for record in answer.get("Records", []):
                got += 1
                self._last_sequence[shard_id] = record["dynamodb"]["SequenceNumber"]
                self.stats.records_seen += 1
                event = self._lambda_record(record)
                if matches_any(self.consumer.filter_patterns, event):
                    kept.append(_Record(event, shard_id, time.monotonic()))
                else:
                    self.stats.records_filtered_out += 1
            with self._lock:  # a read reaches the lanes whole, so batches form from what it returned
                for kept_record in kept:
                    self._lane_of(kept_record.event).pending.append(kept_record)
        return got

    def _lane_of(self, event: dict[str, Any]) -> _Lane:
        keys = json.dumps(event["dynamodb"].get("Keys", {}), sort_keys=True)
        return self._lanes[zlib.crc32(keys.encode()) % len(self._lanes)]

    def _refresh_shards(self) -> None:
        self._refreshed_at = time.monotonic()
        description = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        for shard in description.get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id in self._iterators:
                continue
            parent = shard.get("ParentShardId")
            if parent and parent in self._iterators and self._iterators[parent] is not None:
                continue  # children start once their parent is read to its end
            self._iterators[shard_id] = self._iterator(shard_id)

    def _iterator(self, shard_id: str) -> str:
        last = self._last_sequence.get(shard_id)
        position: dict[str, str] = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": last}
            if last
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        iterator: str = self.streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard_id, **position
        )["ShardIterator"]
        return iterator

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        ddb = dict(record["dynamodb"])
        created: Any = ddb.get("ApproximateCreationDateTime")
        if created is not None and hasattr(created, "timestamp"):
            ddb["ApproximateCreationDateTime"] = int(created.timestamp())
        event = {
            "eventID": record.get("eventID"),
            "eventName": record.get("eventName"),
            "eventVersion": record.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": record.get("awsRegion", "us-east-1"),
            "dynamodb": ddb,
            "eventSourceARN": self.stream_arn,
        }
        if "userIdentity" in record:
            event["userIdentity"] = record["userIdentity"]
        elif (
            record.get("eventName") == "REMOVE"
            and self.removed_by_service is not None
            and self.removed_by_service(ddb.get("Keys") or {})
        ):
            event["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
        return event

    # -- one batch -----------------------------------------------------------------------------

    def _deliver_next(self, lane: _Lane) -> None:
        with self._lock:
            source = (
                lane.redeliver
                if lane.redeliver and (not lane.pending or self.rng.random() < 0.5)
                else lane.pending
            )
            batch = source[: self.consumer.batch_size]
            duplicate = source is lane.redeliver
            split = self.split_rate and len(batch) > 1 and self.rng.random() < self.split_rate
        if split:
            batch = batch[: len(batch) // 2]
        handled = self._settle(batch)
        with self._lock:
            done = source[:handled]
            del source[:handled]
            if not duplicate and self.duplicate_rate:
                for record in done:
                    if self.rng.random() < self.duplicate_rate:
                        lane.redeliver.extend([record] * self.rng.randint(1, self.max_duplicates))

    def _settle(self, batch: list[_Record]) -> int:
        """Deliver `batch` until each record succeeded or was discarded, in order; returns how many
        of its leading records are settled (all of them unless delivery is stopping)."""
        pieces = [_Piece(list(batch))]
        settled = 0
        while pieces:
            piece = pieces[0]
            expired = self._expired(piece.records)
            if expired:
                self._discard(piece, piece.records[:expired], "RecordAgeExceeded")
                settled += expired
                piece.records = piece.records[expired:]
                if not piece.records:
                    pieces.pop(0)
                continue
            if self._stop.is_set():
                return settled
            if piece.retrying:
                with self._lock:
                    self.stats.retries += 1
            outcome = self._invoke(piece.records)
            piece.invocations += 1
            piece.last = outcome
            piece.retrying = False
            if outcome.retry_from is None:
                settled += len(piece.records)
                pieces.pop(0)
                continue
            with self._lock:
                self.stats.batches_failed += 1
            if outcome.function_error and self.consumer.bisect_on_error and len(piece.records) > 1:
                half = len(piece.records) // 2
                pieces[:1] = [
                    _Piece(part, piece.retries, piece.invocations, outcome)
                    for part in (piece.records[:half], piece.records[half:])
                ]
                continue  # a split is free: no retry counted
            settled += outcome.retry_from  # checkpointed before the first record reported failed
            piece.records = piece.records[outcome.retry_from :]
            piece.retries += 1
            if 0 <= self.maximum_retry_attempts < piece.retries:
                self._discard(piece, piece.records, "RetryAttemptsExhausted")
                settled += len(piece.records)
                pieces.pop(0)
                continue
            piece.retrying = True
            self._stop.wait(min(self.retry_delay * piece.retries, 0.5))
        return settled

    def _expired(self, records: list[_Record]) -> int:
        """How many leading records are too old to deliver: older than MaximumRecordAgeInSeconds,
        or than the stream keeps them when that is -1. Only a prefix, so order is kept."""
        limit = self.maximum_record_age if self.maximum_record_age >= 0 else STREAM_RETENTION_SECONDS
        now = self.clock()
        count = 0
        for record in records:
            created = record.event["dynamodb"].get("ApproximateCreationDateTime")
            if created is None or now - float(created) <= limit:
                break
            count += 1
        return count

    def _invoke(self, records: list[_Record]) -> Invocation:
        batch = [record.event for record in records]
        with self._lock:
            self.stats.invocations += 1
            self.stats.records_delivered += len(batch)
        context = LambdaContext(self.consumer.logical_id, timeout_seconds=self.consumer.timeout_seconds)
        try:
            if self.before_invoke:
                self.before_invoke(batch)
            response = self.handler({"Records": batch}, context)
        except BaseException as error:  # a crash of the function: the batch fails as a whole
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            logger.info("%s failed a batch of %d: %s", self.consumer.logical_id, len(batch), error)
            return Invocation(0, function_error=True, request_id=context.aws_request_id)
        retry_from = retry_position(response, batch) if self.consumer.report_batch_item_failures else None
        return Invocation(retry_from, function_error=False, request_id=context.aws_request_id)

    def _discard(self, piece: _Piece, records: list[_Record], condition: str) -> None:
        """Drop `records` and tell the on-failure destination, as Lambda's invocation record does."""
        message = on_failure_record(
            [record.event for record in records],
            condition=condition,
            function_arn=self.function_arn,
            stream_arn=self.stream_arn,
            shard_id=records[0].shard_id,
            invocations=piece.invocations,
            last=piece.last,
            now=self.clock(),
        )
        with self._lock:
            self.stats.sent_to_on_failure += len(records)
            self.stats.on_failure.append(message)
            self.stats.discarded.extend(record.event for record in records)
        if self.sqs is not None and self.queue_url:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(message, default=str))
        logger.warning(
            "%s: %d record(s) sent to the on-failure destination (%s)",
            self.consumer.logical_id,
            len(records),
            condition,
        )


def retry_position(response: Any, batch: list[dict[str, Any]]) -> int | None:
    """Where a partial batch response puts the checkpoint: None when the whole batch succeeded,
    else the index of the first record to deliver again.

    Success: no response, an empty one, or a null or empty `batchItemFailures`. The earliest
    reported record is the checkpoint (in a shard's batch, the lowest sequence number). The whole
    batch failed (0) when the response is not an object, the list is not a list, or an item has
    no `itemIdentifier` naming a record of this batch (missing, null, empty, misspelt, unknown)."""
    if response is None:
        return None
    if not isinstance(response, dict):
        return 0
    failures = response.get("batchItemFailures")
    if failures is None:
        return None
    if not isinstance(failures, list):
        return 0
    positions = {record["dynamodb"].get("SequenceNumber"): i for i, record in enumerate(batch)}
    failed = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in positions:
            return 0
        failed.append(positions[identifier])
    return min(failed) if failed else None


def on_failure_record(
    batch: list[dict[str, Any]],
    *,
    condition: str,
    function_arn: str,
    stream_arn: str,
    shard_id: str,
    invocations: int,
    last: Invocation | None,
    now: float,
) -> dict[str, Any]:
    """The document Lambda sends to a stream mapping's on-failure destination (the developer
    guide's "Example Invocation Record"): metadata about the discarded batch, not its records.
    A batch that aged out before it was ever invoked has no responseContext; `functionError` is
    there only when the last invocation raised."""
    first, last_record = batch[0]["dynamodb"], batch[-1]["dynamodb"]
    message: dict[str, Any] = {
        "requestContext": {
            "requestId": last.request_id if last else str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invocations,
        }
    }
    if last is not None:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if last.function_error:
            response["functionError"] = "Unhandled"
        message["responseContext"] = response
    message["version"] = "1.0"
    message["timestamp"] = (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    message["DDBStreamBatchInfo"] = {
        "shardId": shard_id,
        "startSequenceNumber": first.get("SequenceNumber"),
        "endSequenceNumber": last_record.get("SequenceNumber"),
        "approximateArrivalOfFirstRecord": _arrival(first),
        "approximateArrivalOfLastRecord": _arrival(last_record),
        "batchSize": len(batch),
        "streamArn": stream_arn,
    }
    return message


def _arrival(record: dict[str, Any]) -> str | None:
    created = record.get("ApproximateCreationDateTime")
    if created is None:
        return None
    return datetime.fromtimestamp(float(created), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _function_arn(stream_arn: str, function_name: str) -> str:
    """The consumer's ARN in the stream's region and account (arn:aws:dynamodb:REGION:ACCOUNT:...)."""
    parts = stream_arn.split(":")
    region, account = (parts[3], parts[4]) if len(parts) > 5 else ("us-east-1", "123456789012")
    return f"arn:aws:lambda:{region}:{account}:function:{function_name}"


def _within(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        also = "" if low == -1 else " (or -1)"
        raise ValueError(f"{name} is {value}: Lambda accepts {low} to {high}{also}; fix it in template.yaml")
    return value
