"""The worker's metrics (CONTRACT §6): what it records for the transitions it writes, from the sample
stream records in events/, against the bot's table on moto. A record delivered twice changes
nothing the second time, and so counts nothing twice."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bot import metrics
from bot.handlers import worker
from bot.local.lambda_context import LambdaContext
from bot.store.codec import from_item, to_item
from bot.store.model import Execution, Status
from tests.events import load_event


@pytest.fixture
def table(server_table: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from bot.local.pipeline import fresh_sandboxes

    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    fresh_sandboxes()
    yield server_table
    fresh_sandboxes()


def stored(table: str, event: dict[str, Any], **changes: Any) -> tuple[Execution, dict[str, Any]]:
    """Puts the event's run in the table (started a minute ago) and returns it with the event
    rewritten to carry exactly what was stored, as the stream would."""
    (record,) = event["Records"]
    ex = dataclasses.replace(
        from_item(record["dynamodb"]["NewImage"]), created_at_ms=int(time.time() * 1000) - 60_000, **changes
    )
    item = to_item(ex)
    boto3.client("dynamodb").put_item(TableName=table, Item=item)
    event = copy.deepcopy(event)
    event["Records"][0]["dynamodb"]["NewImage"] = item
    event["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] = time.time() - 2
    return ex, event


def handled(event: dict[str, Any]) -> list[dict[str, Any]]:
    with metrics.collected() as documents:
        response = worker.handler(event, LambdaContext("WorkerFunction", 120))
    assert response == {"batchItemFailures": []}
    return documents


def named(documents: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == name]


def test_the_first_step_of_a_run_counts_the_run_started_and_times_the_step(table):
    ex, event = stored(table, load_event("stream-insert"))
    documents = handled(event)
    (started,) = named(documents, metrics.RUNS_STARTED)
    assert (started["runbook"], started["trigger"], started["execution_id"]) == (
        ex.runbook,
        ex.trigger,
        ex.execution_id,
    )
    (step,) = named(documents, metrics.STEP_DURATION)
    runbook_steps = {s.id: s.action for s in worker.SANDBOX().catalog.runbooks[ex.runbook].steps}
    assert step["action"] == runbook_steps[ex.cursor or next(iter(runbook_steps))]
    assert 0 < step[metrics.STEP_DURATION][0] < 120_000
    (age,) = named(documents, metrics.STREAM_RECORD_AGE)
    assert age["consumer"] == "worker"
    assert 1_000 <= age[metrics.STREAM_RECORD_AGE][0] < 60_000, "the record was written two seconds ago"


def test_a_record_delivered_twice_counts_its_run_and_step_once(table):
    _, event = stored(table, load_event("stream-insert"))
    handled(event)
    again = handled(event)
    assert named(again, metrics.RUNS_STARTED) == []
    assert named(again, metrics.STEP_DURATION) == []
    assert len(named(again, metrics.STREAM_RECORD_AGE)) == 1, "its age is still news"


def test_a_run_waiting_for_approval_records_nothing_but_the_records_age(table):
    _, event = stored(table, load_event("stream-modify"))
    documents = handled(event)
    assert [d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] for d in documents] == [
        metrics.STREAM_RECORD_AGE
    ]


def test_an_approved_step_records_how_long_the_approvers_took(table):
    waiting = from_item(load_event("stream-modify")["Records"][0]["dynamodb"]["NewImage"])
    assert waiting.approval is not None
    approval = dataclasses.replace(
        waiting.approval,
        decision="approved",
        decided_by="U0ACMELEAD",
        decided_at_ms=waiting.approval.requested_at_ms + 95_000,
    )
    ex, event = stored(
        table,
        load_event("stream-modify"),
        status=Status.APPROVED,
        approval=approval,
        approved_steps=(*waiting.approved_steps, approval.step_id),
    )
    documents = handled(event)
    (wait,) = named(documents, metrics.APPROVAL_WAIT)
    assert (wait["runbook"], wait["decision"], wait[metrics.APPROVAL_WAIT]) == (
        ex.runbook,
        "approved",
        [95.0],
    )
    assert named(documents, metrics.RUNS_STARTED) == [], "the run started long before"


def test_a_run_the_worker_ends_counts_as_ended_with_its_final_status(table):
    ex, event = stored(table, load_event("stream-insert"), cancel_requested_by="U0DEVONCALL")
    documents = handled(event)
    (ended,) = named(documents, metrics.RUNS_ENDED)
    assert (ended["runbook"], ended["status"], ended["execution_id"]) == (
        ex.runbook,
        Status.CANCELLED.value,
        ex.execution_id,
    )


def test_the_first_transition_after_a_retry_counts_the_run_started_again_once(table):
    from bot.store.model import EventKind, TimelineEvent

    waiting = from_item(load_event("stream-modify")["Records"][0]["dynamodb"]["NewImage"])
    now = int(time.time() * 1000)
    resumed = TimelineEvent(
        waiting.last_seq + 1, now, EventKind.RUN_RESUMED, "resumed", "mitigate", "U0DEVONCALL"
    )
    ex, event = stored(
        table,
        load_event("stream-modify"),
        status=Status.RUNNING,
        approval=None,
        approved_steps=(),
        updated_at_ms=now,
        reopened=1,
        timeline=(*waiting.timeline, resumed),
    )
    documents = handled(event)
    (started,) = named(documents, metrics.RUNS_STARTED)
    assert (started["runbook"], started["trigger"], started["execution_id"]) == (
        ex.runbook,
        "retry",
        ex.execution_id,
    )
    assert named(handled(event), metrics.RUNS_STARTED) == [], "a record delivered twice counts it once"
