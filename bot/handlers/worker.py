"""The stream-triggered worker: each state record advances its run by at most one step.

Partial batch failures are reported per record (ReportBatchItemFailures), so one bad run never
holds back the others in its batch; the template bisects and bounds retries, and what exhausts
them lands in the on-failure queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from bot import metrics
from bot.engine.resumes import just_resumed
from bot.handlers.records import expired_state, record_age_ms, state_image
from bot.handlers.services import Sandbox, Services, on_lambda
from bot.store.model import Execution, Status

logger = Logger()
SANDBOX = Sandbox(Services.for_function)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # A processor per invocation: it holds the batch's outcomes, which must never mix with another's.
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    remaining = context.get_remaining_time_in_millis if context else (lambda: 60_000)
    services = SANDBOX()
    response = process_partial_response(
        event=event,
        record_handler=lambda record: advance_record(record, services, remaining),
        processor=processor,
        context=context,
    )
    return dict(response)


def advance_record(
    record: DynamoDBRecord, services: Services, remaining_ms: Callable[[], int] = lambda: 60_000
) -> None:
    expired = expired_state(record.raw_event)
    if expired is not None:
        purge_expired(expired, services)
        return
    image: Execution | None = state_image(record.raw_event)
    if image is None:
        return  # not a state item: claims, outputs, the publisher's items
    age_ms = record_age_ms(record.raw_event, time.time())
    if age_ms is not None:
        metrics.stream_record_age("worker", age_ms, image.execution_id)
    started = time.perf_counter()
    outcome = services.executor.advance(image, remaining_ms)
    record_transition(image, outcome, (time.perf_counter() - started) * 1000, services)
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


def purge_expired(ex: Execution, services: Services) -> None:
    """One retention rule: when a run's state item expires, nothing else of that run remains."""
    from bot.engine.starts import run_locks
    from bot.store import keys

    locks = [keys.active_run_key(ex.partner, ex.runbook)]
    runbook = services.catalog.runbooks.get(ex.runbook)
    partner = services.catalog.partners.get(ex.partner)
    if runbook is not None and partner is not None:
        locks += run_locks(runbook, partner, ex.params, drill=ex.drill)
    deleted = services.store.purge(ex.execution_id, locks)
    logger.info("purged an expired run", extra={"execution_id": ex.execution_id, "items": deleted})


def record_transition(image: Execution, outcome: Any, elapsed_ms: float, services: Services) -> None:
    """Metrics of a transition this worker wrote. Its write was conditional on the record's version,
    so a record delivered twice, or raced by another worker, is counted once."""
    if outcome.action not in {"moved", "executed"}:
        return  # idle, stale, claimed elsewhere, conflict: nothing changed here
    if image.kind == "plan":  # counted as plans started; their previews are not runs' steps or ends
        if image.status is Status.PENDING:
            metrics.run_started(image.runbook, "plan", image.execution_id)
        return
    if image.status is Status.PENDING:
        metrics.run_started(image.runbook, image.trigger, image.execution_id)
    elif just_resumed(image):  # RunsEnded counted its end: it runs again
        metrics.run_started(image.runbook, "retry", image.execution_id)
    approval = image.approval
    if image.status is Status.APPROVED and approval is not None and approval.decided_at_ms:
        waited_s = max(0, approval.decided_at_ms - approval.requested_at_ms) / 1000
        metrics.approval_wait(image.runbook, approval.decision or "approved", waited_s, image.execution_id)
    if outcome.action == "executed" and outcome.step_id:
        action = _action_of(services, image.runbook, outcome.step_id)
        metrics.step_duration(action, elapsed_ms, image.execution_id)
    if outcome.detail in {s.value for s in Status if s.terminal}:
        metrics.run_ended(image.runbook, outcome.detail, image.execution_id)


def _action_of(services: Services, runbook: str, step_id: str) -> str:
    try:
        return str(services.catalog.runbooks[runbook].step(step_id).action)
    except LookupError:
        return "unknown"


if on_lambda():  # init, not the first batch
    SANDBOX.warm()
