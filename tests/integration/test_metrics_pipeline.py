"""The bot's own metrics over a whole run (CONTRACT §6): the throttle runbook, from the slash command
through two approvals to SUCCEEDED, on the local pipeline's real stream records, with every EMF
document the functions record collected as CloudWatch Logs would receive them, and the local
pipeline's own view of them (what `runbook-bot dev` prints and the playground shows)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from bot import metrics
from bot.local.emf import Snapshot
from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.store.model import Execution, Status

pytestmark = pytest.mark.integration

ACME = "C0ACMEOPS"


@pytest.fixture(scope="module")
def run(
    local_view: list[tuple[Snapshot, list[str]]],
) -> Iterator[tuple[Execution, list[dict[str, Any]], float]]:
    import time

    import boto3

    from bot.demo import seed_demo

    with metrics.collected() as documents, LocalPipeline(PipelineOptions(sweep_interval=0.3)) as pipeline:
        seed_demo(boto3.session.Session())
        began = time.time()
        response = pipeline.command("throttle partner-acme", user_id="U0DEVONCALL", channel_id=ACME)
        execution_id = json.loads(response["body"])["text"].split("execution `")[1].split("`")[0]
        for step, approver in (("mitigate", "U0ACMELEAD"), ("replay", "U0ACMEONCALL")):
            ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
            while ex.approval is None or ex.approval.step_id != step:
                ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
            value = json.dumps({"execution_id": execution_id, "step_id": step, "version": ex.version})
            assert pipeline.click("approve", value, user_id=approver)["statusCode"] == 200
        done = pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 90)
        assert pipeline.drain(90)
        local_view.append((pipeline.metrics.snapshot(), pipeline.metrics.summary()))
        yield done, list(documents), time.time() - began


@pytest.fixture(scope="module")
def local_view() -> list[tuple[Snapshot, list[str]]]:
    """The pipeline's aggregate of the same run, taken once the run has drained."""
    return []


@pytest.fixture
def seen(run, local_view) -> tuple[Snapshot, list[str]]:
    (view,) = local_view
    return view


def of_run(documents: list[dict[str, Any]], ex: Execution, name: str) -> list[dict[str, Any]]:
    return [
        d
        for d in documents
        if d.get("execution_id") == ex.execution_id
        and d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == name
    ]


def test_the_run_succeeded(run):
    done, _, _ = run
    assert done.status is Status.SUCCEEDED, done.error


def test_the_run_is_counted_started_once_and_ended_once_with_its_status(run):
    done, documents, _ = run
    (started,) = of_run(documents, done, metrics.RUNS_STARTED)
    assert (started["runbook"], started["trigger"]) == ("throttle", "slash")
    (ended,) = of_run(documents, done, metrics.RUNS_ENDED)
    assert (ended["runbook"], ended["status"]) == ("throttle", "SUCCEEDED")


def test_every_step_that_ran_is_timed_under_its_action(run):
    done, documents, elapsed = run
    from bot.catalog import load_catalog

    runbook = load_catalog().runbooks["throttle"]
    ran = {runbook.step(s).action for s, record in done.steps.items() if record.outcome != "skipped"}
    timed = of_run(documents, done, metrics.STEP_DURATION)
    assert {d["action"] for d in timed} >= ran
    for document in timed:
        (value,) = document[metrics.STEP_DURATION]
        assert 0 <= value <= elapsed * 1000


def test_both_approvals_record_how_long_they_waited(run):
    done, documents, elapsed = run
    waits = of_run(documents, done, metrics.APPROVAL_WAIT)
    assert [(d["runbook"], d["decision"]) for d in waits] == [("throttle", "approved")] * 2
    for document in waits:
        (value,) = document[metrics.APPROVAL_WAIT]
        assert 0 <= value <= elapsed


def test_the_worker_records_the_age_of_each_record_it_handles(run):
    done, documents, _ = run
    ages = of_run(documents, done, metrics.STREAM_RECORD_AGE)
    assert ages and {d["consumer"] for d in ages} <= {"worker", "timeline"}
    assert all(
        math.isfinite(d[metrics.STREAM_RECORD_AGE][0]) and d[metrics.STREAM_RECORD_AGE][0] >= 0 for d in ages
    )


def test_every_document_is_in_the_bots_namespace(run):
    _, documents, _ = run
    assert documents
    namespaces = {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in documents}
    assert namespaces == {metrics.DEFAULT_NAMESPACE}


# -- the local view: what `runbook-bot dev` prints and the playground shows --------------------------


def test_the_local_view_counts_one_run_started_by_slash_and_one_ended_succeeded(seen):
    snapshot, _ = seen
    assert snapshot.total(metrics.RUNS_STARTED) == 1
    assert snapshot.total(metrics.RUNS_STARTED, runbook="throttle", trigger="slash") == 1
    assert snapshot.total(metrics.RUNS_ENDED) == 1
    assert snapshot.total(metrics.RUNS_ENDED, runbook="throttle", status="SUCCEEDED") == 1
    assert snapshot.rejected == 0 and snapshot.dropped == 0


def test_the_local_view_times_each_action_that_ran(run, seen):
    done, documents, elapsed = run
    snapshot, _ = seen
    from bot.catalog import load_catalog

    runbook = load_catalog().runbooks["throttle"]
    ran = {runbook.step(s).action for s, record in done.steps.items() if record.outcome != "skipped"}
    timed = {s.dimensions["action"]: s.statistics for s in snapshot.find(metrics.STEP_DURATION)}
    assert set(timed) >= ran
    for action, statistics in timed.items():
        recorded = [
            d[metrics.STEP_DURATION][0]
            for d in of_run(documents, done, metrics.STEP_DURATION)
            if d["action"] == action
        ]
        assert statistics["SampleCount"] == len(recorded), action
        assert statistics["Sum"] == pytest.approx(sum(recorded)), action
        assert statistics["Maximum"] == max(recorded) and statistics["Minimum"] == min(recorded)
        assert (
            statistics["Minimum"]
            <= statistics["p50"]
            <= statistics["p99"]
            <= statistics["Maximum"]
            <= elapsed * 1000
        )


def test_the_local_view_has_both_approval_waits_and_each_consumers_record_age(seen):
    snapshot, _ = seen
    (approved,) = snapshot.find(metrics.APPROVAL_WAIT, runbook="throttle", decision="approved")
    assert approved.unit == "Seconds" and approved.statistics["SampleCount"] == 2
    consumers = {s.dimensions["consumer"] for s in snapshot.find(metrics.STREAM_RECORD_AGE)}
    assert consumers == {"worker", "timeline"}


def test_the_local_view_holds_exactly_what_the_functions_logged(run, seen):
    """One source: each series' samples and sum are those of the EMF documents, nothing else."""
    _, documents, _ = run
    snapshot, _ = seen
    assert snapshot.documents == len(documents)
    for series in snapshot.series:
        values = [
            value
            for d in documents
            if d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == series.name
            and all(d.get(k) == v for k, v in series.dimensions.items())
            for value in d[series.name]
        ]
        assert series.statistics["SampleCount"] == len(values), series
        assert series.statistics["Sum"] == pytest.approx(sum(values)), series


def test_the_summary_says_it_in_a_few_lines(seen):
    _, summary = seen
    assert len(summary) <= 1 + len(metrics.METRICS)
    assert "  RunsStarted (runbook/trigger) 1: throttle/slash 1" in summary
    assert "  RunsEnded (runbook/status) 1: throttle/SUCCEEDED 1" in summary
    (steps,) = [line for line in summary if line.startswith("  StepDuration (action) p50/p99/max ms: ")]
    assert "cloudwatch.metrics " in steps and "dynamodb.replay " in steps
    assert any(
        line.startswith("  ApprovalWait (decision/runbook) p50/p99/max s: approved/throttle ")
        for line in summary
    )
