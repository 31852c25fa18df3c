"""DynamoDB stream records delivered to a stream consumer as Lambda's event source mapping would.

Real records from the embedded engine's `dynamodbstreams` API, filtered by the consumer's
FilterCriteria, batched per shard in order up to BatchSize, handed to the handler in Lambda's
event format. `batchItemFailures` retry from the first failed record; a raised error fails the
batch (bisected when BisectBatchOnFunctionError); past MaximumRetryAttempts the records go to
the on-failure queue and delivery moves on. With a ParallelizationFactor of N, records are
spread over N lanes by partition key, each delivered by its own invocations in order (Lambda's
guarantee: order per partition key, not across keys). Faults can be injected (duplicates, split
batches).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.local.filters import matches_any
from bot.local.lambda_context import LambdaContext

logger = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any], Any], Any]


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
    sent_to_on_failure: int = 0
    on_failure: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Lane:
    """Records of the partition keys one concurrent invocation handles, in stream order."""

    pending: list[dict[str, Any]] = field(default_factory=list)  # filtered, not yet acknowledged
    redeliver: list[dict[str, Any]] = field(default_factory=list)  # injected duplicates, for a later batch
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
    ) -> None:
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
        self.stats = DeliveryStats()
        self._iterators: dict[str, str | None] = {}
        self._last_sequence: dict[str, str] = {}
        self._lanes = [_Lane() for _ in range(max(1, int(getattr(consumer, "parallelization_factor", 1))))]
        self._stop = threading.Event()
        self._empty_polls = 0  # complete polls in a row that found no record
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
                    has_work = bool(lane.pending or lane.redeliver)
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

    def _poll(self) -> int:
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
            for record in answer.get("Records", []):
                got += 1
                self._last_sequence[shard_id] = record["dynamodb"]["SequenceNumber"]
                self.stats.records_seen += 1
                event = self._lambda_record(record)
                if matches_any(self.consumer.filter_patterns, event):
                    with self._lock:
                        self._lane_of(event).pending.append(event)
                else:
                    self.stats.records_filtered_out += 1
        return got

    def _lane_of(self, event: dict[str, Any]) -> _Lane:
        keys = json.dumps(event["dynamodb"].get("Keys", {}), sort_keys=True)
        return self._lanes[zlib.crc32(keys.encode()) % len(self._lanes)]

    def _refresh_shards(self) -> None:
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
        return {
            "eventID": record.get("eventID"),
            "eventName": record.get("eventName"),
            "eventVersion": record.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": record.get("awsRegion", "us-east-1"),
            "dynamodb": ddb,
            "eventSourceARN": self.stream_arn,
        }

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
        handled = self._invoke_with_retries(batch, self.consumer.maximum_retry_attempts)
        with self._lock:
            done = source[:handled]
            del source[:handled]
            if not duplicate and self.duplicate_rate:
                for record in done:
                    if self.rng.random() < self.duplicate_rate:
                        lane.redeliver.extend([record] * self.rng.randint(1, self.max_duplicates))

    def _invoke_with_retries(self, batch: list[dict[str, Any]], retries_left: int) -> int:
        """Deliver `batch`; returns how many of its leading records are done (delivered or dead-lettered)."""
        attempts = 0
        while True:
            failed_at = self._invoke(batch)
            if failed_at is None:
                return len(batch)
            if failed_at > 0:
                # Lambda checkpoints before the first failed record and retries from there.
                return failed_at
            with self._lock:
                self.stats.batches_failed += 1
            attempts += 1
            if self.consumer.bisect_on_error and len(batch) > 1:
                half = len(batch) // 2
                return self._invoke_with_retries(batch[:half], retries_left - attempts)
            if 0 <= self.consumer.maximum_retry_attempts < attempts or retries_left - attempts < 0:
                self._dead_letter(batch)
                return len(batch)
            time.sleep(min(0.05 * attempts, 0.5))

    def _invoke(self, batch: list[dict[str, Any]]) -> int | None:
        """None when the whole batch succeeded, else the index of the first record to retry."""
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
            return 0
        failures = (
            (response or {}).get("batchItemFailures") or []
            if self.consumer.report_batch_item_failures
            else []
        )
        if not failures:
            return None
        failed = {f.get("itemIdentifier") for f in failures}
        for i, record in enumerate(batch):
            if record["dynamodb"].get("SequenceNumber") in failed:
                return i
        return 0  # an identifier we did not send: Lambda treats the whole batch as failed

    def _dead_letter(self, batch: list[dict[str, Any]]) -> None:
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        message = {
            "requestContext": {
                "condition": "RetryAttemptsExhausted",
                "functionArn": self.consumer.logical_id,
                "approximateInvokeCount": self.consumer.maximum_retry_attempts + 1,
            },
            "DDBStreamBatchInfo": {
                "shardId": "local",
                "startSequenceNumber": first.get("SequenceNumber"),
                "endSequenceNumber": last.get("SequenceNumber"),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
            "records": batch,
        }
        with self._lock:
            self.stats.sent_to_on_failure += len(batch)
            self.stats.on_failure.append(message)
        if self.sqs is not None and self.queue_url:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(message, default=str))
        logger.warning(
            "%s: %d record(s) sent to the on-failure destination", self.consumer.logical_id, len(batch)
        )
