"""The stream-triggered worker: each state record advances its run by at most one step.

Partial batch failures are reported per record (ReportBatchItemFailures), so one bad run never
holds back the others in its batch; the template bisects and bounds retries, and what exhausts
them lands in the on-failure queue.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from bot.handlers.records import state_image
from bot.store.model import Execution

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # A processor per invocation: it holds the batch's outcomes, which must never mix with another's.
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    remaining = context.get_remaining_time_in_millis if context else (lambda: 60_000)
    response = process_partial_response(
        event=event,
        record_handler=lambda record: advance_record(record, remaining),
        processor=processor,
        context=context,
    )
    return dict(response)


def advance_record(record: DynamoDBRecord, remaining_ms: Callable[[], int] = lambda: 60_000) -> None:
    image: Execution | None = state_image(record.raw_event)
    if image is None:
        return  # not a state item: claims, outputs, the publisher's items
    outcome = _executor().advance(image, remaining_ms)
    logger.info(
        "advanced",
        extra={
            "execution_id": outcome.execution_id,
            "outcome": outcome.action,
            "detail": outcome.detail,
            "step": outcome.step_id,
            "version": image.version,
        },
    )


@cache
def _executor() -> Any:
    from bot.catalog import load_catalog
    from bot.engine.executor import Executor
    from bot.store.executions import ExecutionStore

    return Executor(ExecutionStore(), load_catalog())
