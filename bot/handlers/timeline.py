"""The timeline publisher: a second consumer of the stream, so a slow Slack never holds up a run."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from bot import metrics
from bot.handlers.records import old_state, record_age_ms, state_image
from bot.handlers.services import Sandbox, Services, on_lambda
from bot.store.exports import requested_export
from bot.store.homes import requested_home

logger = Logger()
SANDBOX = Sandbox(Services.for_function)
RECORDING_MARGIN_SECONDS = 5  # Slack retries stop this long before the function's end
DEAD_TOKEN = frozenset({"invalid_auth", "token_revoked"})  # perhaps rotated: read the secret again


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = SANDBOX()
    publisher = services.publisher()
    publisher.budget.reset(context.get_remaining_time_in_millis() / 1000 - RECORDING_MARGIN_SECONDS)
    # A processor per invocation: it holds the batch's outcomes, which must never mix with another's.
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    newest = newest_versions(event)
    asked: set[str] = set()  # homes asked for in this batch: one run's burst asks once per person
    return dict(
        process_partial_response(
            event=event,
            record_handler=lambda record: publish_record(record, services, newest, asked),
            processor=processor,
            context=context,
        )
    )


def newest_versions(event: dict[str, Any]) -> dict[str, int]:
    """The newest version of each run in a batch: an older record of the same run is covered by
    the newer image (it holds the whole timeline), so the parent is updated once, not per record."""
    newest: dict[str, int] = {}
    for record in event.get("Records") or []:
        image = ((record.get("dynamodb") or {}).get("NewImage")) or {}
        execution_id = (image.get("execution_id") or {}).get("S")
        version = (image.get("version") or {}).get("N")
        if execution_id and version is not None:
            newest[execution_id] = max(newest.get(execution_id, 0), int(version))
    return newest


def publish_record(
    record: DynamoDBRecord,
    services: Services,
    newest: dict[str, int] | None = None,
    asked: set[str] | None = None,
) -> None:
    home = requested_home(record.raw_event)
    if home is not None:  # app_home_opened, or a refresh: publish the person's App Home
        outcome = services.homes().handle(home)
        if outcome == "waiting":
            metrics.slack_error("ratelimited")
        logger.info("home", extra={"user": home.user_id, "reason": home.reason, "outcome": outcome})
        return
    export = requested_export(record.raw_event)
    if export is not None:  # /runbook export or the Export evidence button: upload to the thread
        from bot.slack.evidence import EvidenceExporter

        outcome = EvidenceExporter.beside(services.publisher()).handle(export)
        logger.info("evidence export", extra={"execution_id": export.execution_id, "outcome": outcome})
        return
    image = state_image(record.raw_event)
    if image is None:
        return
    _refresh_homes(services, old_state(record.raw_event), image, asked if asked is not None else set())
    if newest and image.version < newest.get(image.execution_id, image.version):
        return  # a newer record of this run is in the same batch: it publishes everything
    age_ms = record_age_ms(record.raw_event, time.time())
    if age_ms is not None:
        metrics.stream_record_age("timeline", age_ms, image.execution_id)
    result = services.publisher().publish(image, response_url=_response_url(record.raw_event))
    if result.unreachable:
        metrics.slack_error(result.unreachable, image.execution_id)
    if result.rate_limited:  # not a run waiting for its turn: that is the pacing working
        metrics.slack_error("ratelimited", image.execution_id)
    if result.unreachable in DEAD_TOKEN:
        services.secrets.reread()  # rate-limited; a rotated token serves the run's next record
    logger.info(
        "published",
        extra={
            "execution_id": image.execution_id,
            "posted": result.posted,
            "recovered": result.recovered,
            "parent_updated": result.parent_updated,
            "unreachable": result.unreachable,
            "lookups": result.lookups,
            "waiting_for_turn": result.paced,
        },
    )


def _refresh_homes(services: Services, old: Any, new: Any, asked: set[str]) -> None:
    """Every record of a run is judged (a batch's older records included: the one that entered an
    approval may be followed by the one that left it); each person is asked once per batch."""
    try:
        asked.update(services.homes().refresh_for(old, new, skip=asked))
    except Exception:  # a home is a view of the runs: the run's own timeline must not wait for it
        logger.warning(
            "could not ask for home refreshes", extra={"execution_id": new.execution_id}, exc_info=True
        )


def _response_url(record: dict[str, Any]) -> str:
    """The slash command's response_url, when the state item carries one."""
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    return str((image.get("response_url") or {}).get("S") or "")


if on_lambda():  # init, not the first batch
    SANDBOX.warm()
