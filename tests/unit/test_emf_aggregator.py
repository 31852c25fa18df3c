"""The local stack's view of the bot's own metrics: statistics per metric and dimension set, from
the very EMF lines the functions write to their logs, as CloudWatch computes them."""

from __future__ import annotations

import json
import math
import random
import threading
from typing import Any

import pytest

from bot import metrics
from bot.local.emf import (
    EXACT_UP_TO,
    MAX_BUCKETS,
    RELATIVE_ACCURACY,
    EmfAggregator,
    EmfError,
    Statistics,
    parse_line,
    summary_lines,
)


@pytest.fixture(autouse=True)
def lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "RunbookBot")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "runbook-bot")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


def lambda_log_lines(
    record: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> list[str]:
    """What a function prints to its log group in Lambda while `record()` runs."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "runbook-bot-WorkerFunction")
    previous = metrics.publish_to(None)
    try:
        record()
    finally:
        metrics.publish_to(previous)
    return capsys.readouterr().out.splitlines()


def a_throttle_run() -> None:
    """The metrics the worker, the publisher and the sweeper record over a throttle run and a half."""
    metrics.run_started("throttle", "slash", "rb-aaaaaaaaaa")
    metrics.run_started("throttle", "alarm", "rb-bbbbbbbbbb")
    for action, ms in (
        ("dynamodb.describe", 40.0),
        ("cloudwatch.metrics", 120.0),
        ("dynamodb.hot_keys", 900.0),
        ("dynamodb.update_capacity", 310.0),
        ("dynamodb.replay", 2200.0),
        ("dynamodb.describe", 60.0),
    ):
        metrics.step_duration(action, ms, "rb-aaaaaaaaaa")
    metrics.approval_wait("throttle", "approved", 35.5, "rb-aaaaaaaaaa")
    metrics.approval_wait("throttle", "approved", 80.0, "rb-aaaaaaaaaa")
    metrics.approval_wait("throttle", "expired", 900.0, "rb-bbbbbbbbbb")
    metrics.slack_error("ratelimited", "rb-aaaaaaaaaa")
    metrics.slack_error("channel_not_found", "rb-bbbbbbbbbb")
    metrics.slack_error("ratelimited", "rb-aaaaaaaaaa")
    for ms in (12.0, 30.0, 18.0):
        metrics.stream_record_age("worker", ms, "rb-aaaaaaaaaa")
    metrics.stream_record_age("timeline", 45.0, "rb-aaaaaaaaaa")
    metrics.run_ended("throttle", "SUCCEEDED", "rb-aaaaaaaaaa")
    metrics.run_ended("throttle", "TIMED_OUT", "rb-bbbbbbbbbb")


@pytest.fixture
def aggregated(monkeypatch, capsys) -> EmfAggregator:
    aggregator = EmfAggregator()
    for line in lambda_log_lines(a_throttle_run, monkeypatch, capsys):
        aggregator.observe(line)
    return aggregator


# -- the functions' own lines ----------------------------------------------------------------------


def test_every_line_a_function_logs_is_parsed_into_its_metric_and_dimensions(monkeypatch, capsys):
    lines = lambda_log_lines(a_throttle_run, monkeypatch, capsys)
    assert len(lines) == 20
    points = [point for line in lines for point in parse_line(line)]
    assert [p.name for p in points[:3]] == [metrics.RUNS_STARTED, metrics.RUNS_STARTED, metrics.STEP_DURATION]
    started = points[0]
    assert started.namespace == "RunbookBot"
    assert started.unit == "Count"
    assert started.dimensions == (("runbook", "throttle"), ("service", "runbook-bot"), ("trigger", "slash"))
    assert started.values == (1.0,)
    assert points[2].unit == "Milliseconds" and points[2].values == (40.0,)
    assert isinstance(started.timestamp_ms, int) and started.timestamp_ms > 1_700_000_000_000


def test_counts_are_summed_per_dimension_values(aggregated):
    snapshot = aggregated.snapshot()
    assert snapshot.documents == 20 and snapshot.rejected == 0
    assert snapshot.total(metrics.RUNS_STARTED) == 2
    assert snapshot.total(metrics.RUNS_STARTED, trigger="slash") == 1
    assert snapshot.total(metrics.RUNS_ENDED, status="SUCCEEDED") == 1
    assert snapshot.total(metrics.RUNS_ENDED, status="TIMED_OUT") == 1
    (ratelimited,) = snapshot.find(metrics.SLACK_ERRORS, kind="ratelimited")
    assert ratelimited.statistics["Sum"] == 2 and ratelimited.statistics["SampleCount"] == 2
    assert ratelimited.dimensions == {"kind": "ratelimited", "service": "runbook-bot"}


def test_durations_keep_every_statistic_per_action(aggregated):
    snapshot = aggregated.snapshot()
    actions = {s.dimensions["action"] for s in snapshot.find(metrics.STEP_DURATION)}
    assert actions == {
        "dynamodb.describe",
        "cloudwatch.metrics",
        "dynamodb.hot_keys",
        "dynamodb.update_capacity",
        "dynamodb.replay",
    }
    (describe,) = snapshot.find(metrics.STEP_DURATION, action="dynamodb.describe")
    assert describe.unit == "Milliseconds"
    assert describe.statistics == {
        "SampleCount": 2,
        "Sum": 100.0,
        "Minimum": 40.0,
        "Maximum": 60.0,
        "Average": 50.0,
        "p50": 40.0,
        "p99": 60.0,
    }
    (approved,) = snapshot.find(metrics.APPROVAL_WAIT, decision="approved")
    assert approved.unit == "Seconds" and approved.statistics["Maximum"] == 80.0
    ages = {s.dimensions["consumer"]: s.statistics for s in snapshot.find(metrics.STREAM_RECORD_AGE)}
    assert ages["worker"]["p50"] == 18.0 and ages["worker"]["SampleCount"] == 3
    assert ages["timeline"]["Maximum"] == 45.0


def test_series_come_in_the_dashboards_order_of_metrics(aggregated):
    names = [s.name for s in aggregated.snapshot().series]
    order = list(metrics.METRICS)
    assert sorted(set(names), key=order.index) == list(dict.fromkeys(names))


def test_the_json_view_names_cloudwatchs_statistics(aggregated):
    view = json.loads(json.dumps(aggregated.snapshot().as_json()))
    assert view["statistics"] == ["SampleCount", "Sum", "Minimum", "Maximum", "Average", "p50", "p99"]
    first = view["series"][0]
    assert first["name"] == metrics.RUNS_STARTED and first["namespace"] == "RunbookBot"
    assert set(first["statistics"]) == set(view["statistics"])


def test_the_pipeline_listens_to_the_same_lines_the_functions_log(monkeypatch, capsys):
    """`metrics.listen` hands the aggregator the line Lambda would print, whatever the sink."""
    printed = lambda_log_lines(a_throttle_run, monkeypatch, capsys)
    heard: list[str] = []
    stop = metrics.listen(heard.append)
    try:
        again = lambda_log_lines(a_throttle_run, monkeypatch, capsys)
    finally:
        stop()

    def without_time(line: str) -> dict[str, Any]:
        document = json.loads(line)
        document["_aws"].pop("Timestamp")
        return document

    assert [without_time(line) for line in heard] == [without_time(line) for line in again]
    assert [without_time(line) for line in heard] == [without_time(line) for line in printed]


# -- percentiles -----------------------------------------------------------------------------------


def test_percentiles_are_cloudwatchs_nearest_rank_and_exact_for_a_local_session():
    statistics = Statistics()
    for value in random.Random(7).sample(range(1, 101), 100):
        statistics.add(float(value))
    figures = statistics.figures()
    assert (figures["p50"], figures["p99"]) == (50.0, 99.0)
    assert (figures["Minimum"], figures["Maximum"], figures["Sum"], figures["Average"]) == (
        1,
        100,
        5050,
        50.5,
    )
    two = Statistics()
    two.add(20.0)
    two.add(10.0)
    assert (two.percentile(50), two.percentile(99), two.percentile(100)) == (10.0, 20.0, 20.0)


def test_past_the_exact_window_percentiles_stay_within_one_percent():
    rng = random.Random(11)
    values = [rng.lognormvariate(5, 1.5) for _ in range(EXACT_UP_TO * 20)]
    statistics = Statistics()
    for value in values:
        statistics.add(value)
    ordered = sorted(values)
    for p in (50, 90, 99):
        true = ordered[math.ceil(p / 100 * len(values)) - 1]
        assert statistics.percentile(p) == pytest.approx(true, rel=RELATIVE_ACCURACY)
    assert statistics.figures()["Maximum"] == max(values)
    assert statistics.figures()["SampleCount"] == len(values)


def test_zero_and_negative_values_keep_their_order():
    statistics = Statistics()
    for value in [-50.0, 0.0, 0.0, 10.0] * (EXACT_UP_TO // 2):
        statistics.add(value)
    assert statistics.percentile(20) == pytest.approx(-50.0, rel=RELATIVE_ACCURACY)
    assert statistics.percentile(50) == 0.0
    assert statistics.percentile(99) == pytest.approx(10.0, rel=RELATIVE_ACCURACY)


def test_memory_stays_bounded_over_any_spread_of_values():
    statistics = Statistics()
    value = 1e-6
    while value < 1e15:  # far more distinct buckets than allowed
        statistics.add(value)
        value *= 1.01
    assert statistics._sketch.buckets() <= MAX_BUCKETS
    assert statistics._values is None  # past the exact window: no list of values kept
    assert statistics.percentile(100) == statistics.maximum
    assert statistics.percentile(99) == pytest.approx(
        1e-6 * 1.01 ** math.floor(0.99 * statistics.count), rel=2 * RELATIVE_ACCURACY
    )


@pytest.mark.parametrize("p", [0, -1, 101])
def test_a_percentile_outside_zero_to_a_hundred_is_refused(p):
    statistics = Statistics()
    statistics.add(1.0)
    with pytest.raises(ValueError, match="above 0 and at most 100"):
        statistics.percentile(p)


# -- what the EMF specification allows ---------------------------------------------------------------


def emf(**root: Any) -> str:
    directive = root.pop(
        "_directive",
        {
            "Namespace": "RunbookBot",
            "Dimensions": [["kind"]],
            "Metrics": [{"Name": "SlackErrors", "Unit": "Count"}],
        },
    )
    document = {"_aws": {"Timestamp": 1_795_000_000_000, "CloudWatchMetrics": [directive]}, **root}
    return json.dumps(document)


def test_each_dimension_set_is_its_own_series_and_an_array_is_several_samples():
    aggregator = EmfAggregator()
    aggregator.observe(
        emf(
            _directive={
                "Namespace": "RunbookBot",
                "Dimensions": [["action"], ["action", "partner"]],
                "Metrics": [{"Name": "StepDuration", "Unit": "Milliseconds"}],
            },
            action="dynamodb.replay",
            partner="partner-acme",
            StepDuration=[10, 20, 30],
        )
    )
    aggregator.observe(
        emf(_directive={"Namespace": "Other", "Dimensions": [], "Metrics": [{"Name": "Beat"}]}, Beat=1)
    )
    snapshot = aggregator.snapshot()
    by_dimensions = {tuple(sorted(s.dimensions)): s.statistics for s in snapshot.find("StepDuration")}
    assert by_dimensions[("action",)]["SampleCount"] == 3
    assert by_dimensions[("action", "partner")]["Sum"] == 60
    (beat,) = snapshot.find("Beat")
    assert (beat.namespace, beat.unit, beat.dimensions) == ("Other", "None", {})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (emf(kind="ratelimited", SlackErrors="1"), "SlackErrors' needs a finite number"),
        (emf(kind="ratelimited", SlackErrors=True), "needs a finite number"),
        (emf(kind="ratelimited", SlackErrors=[1, "x"]), "needs a finite number"),
        (emf(kind="ratelimited", SlackErrors=[]), "needs 1 to 100 values, not 0"),
        (emf(kind="ratelimited", SlackErrors=list(range(101))), "needs 1 to 100 values, not 101"),
        (emf(kind="ratelimited"), "SlackErrors' needs a finite number .* not nothing"),
        (
            '{"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "N", "Dimensions": [], "Metrics": [{"Name": "M"}]}]}, "M": NaN}',
            "finite",
        ),
        (emf(kind="ratelimited", SlackErrors=1e300), "CloudWatch takes values from -2\\^360 to 2\\^360"),
        (emf(SlackErrors=1), "dimension 'kind' needs a string value .* not nothing"),
        (emf(kind=7, SlackErrors=1), "dimension 'kind' needs a string value .* not 7"),
        (emf(kind="", SlackErrors=1), "dimension 'kind' needs a string value of 1 to 1024"),
        (emf(kind="k" * 1025, SlackErrors=1), "1 to 1024 characters"),
        (
            emf(
                _directive={
                    "Namespace": "N",
                    "Dimensions": [[f"d{i}" for i in range(31)]],
                    "Metrics": [{"Name": "M"}],
                },
                M=1,
            ),
            "at most 30 names",
        ),
        (
            emf(_directive={"Namespace": "", "Dimensions": [], "Metrics": [{"Name": "M"}]}, M=1),
            "Namespace must be",
        ),
        (
            emf(_directive={"Namespace": "N", "Dimensions": [], "Metrics": []}),
            "Metrics must be an array of 1 to 100",
        ),
        (
            emf(_directive={"Namespace": "N", "Dimensions": "kind", "Metrics": [{"Name": "M"}]}, M=1),
            "Dimensions must be an array",
        ),
        (
            emf(_directive={"Namespace": "N", "Dimensions": [], "Metrics": [{"Unit": "Count"}]}),
            r"Metrics\[0\].Name must be",
        ),
        (
            emf(_directive={"Namespace": "N", "Dimensions": [], "Metrics": [{"Name": "M", "Unit": 3}]}, M=1),
            "Unit must be",
        ),
        (emf(_directive=["not", "an", "object"]), r"CloudWatchMetrics\[0\] must be an object"),
        ('{"_aws": {"CloudWatchMetrics": []}}', "Timestamp"),
        ('{"_aws": {"Timestamp": 1, "CloudWatchMetrics": []}}', "non-empty array"),
        ('{"_aws": "metrics"}', "`_aws` must be an object"),
    ],
)
def test_a_document_cloudwatch_would_refuse_is_rejected_whole_with_its_reason(line, reason):
    with pytest.raises(EmfError, match=reason):
        parse_line(line)
    aggregator = EmfAggregator()
    aggregator.observe(line)
    snapshot = aggregator.snapshot()
    assert (snapshot.rejected, snapshot.documents, snapshot.series, snapshot.version) == (1, 0, [], 0)
    assert snapshot.last_rejection
    assert "1 rejected (last: " in summary_lines(snapshot)[0]


@pytest.mark.parametrize(
    "line",
    [
        '{"level":"INFO","location":"advance_record:59","message":"advanced","execution_id":"rb-1"}',
        "START RequestId: 8f5d Version: $LATEST",
        "",
        "[1, 2, 3]",
        '{"_aws": ',  # cut off: not JSON, so not a document CloudWatch reads
    ],
)
def test_an_ordinary_log_line_is_ignored_as_cloudwatch_ignores_it(line):
    aggregator = EmfAggregator()
    aggregator.observe(line)
    snapshot = aggregator.snapshot()
    assert (snapshot.rejected, snapshot.documents, snapshot.version) == (0, 0, 0)
    with pytest.raises(EmfError):
        parse_line(line)


def test_series_past_the_limit_are_dropped_and_said():
    aggregator = EmfAggregator(max_series=3)
    for i in range(5):
        aggregator.observe(emf(kind=f"error_{i}", SlackErrors=[1, 1]))
    aggregator.observe(emf(kind="error_0", SlackErrors=1))  # a known series still counts
    snapshot = aggregator.snapshot()
    assert len(snapshot.series) == 3
    assert snapshot.dropped == 4
    assert snapshot.total("SlackErrors") == 7
    assert "4 values dropped past" in summary_lines(snapshot)[0]


def test_concurrent_lines_are_all_counted():
    aggregator = EmfAggregator()
    line = emf(kind="ratelimited", SlackErrors=1)

    def burst() -> None:
        for _ in range(500):
            aggregator.observe(line)

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    readers = [aggregator.snapshot() for _ in range(50)]  # reads while they write
    for thread in threads:
        thread.join()
    snapshot = aggregator.snapshot()
    assert snapshot.total("SlackErrors") == 4000 and snapshot.version == 4000
    assert all(r.total("SlackErrors", "SampleCount") <= 4000 for r in readers)


# -- the console's summary -------------------------------------------------------------------------


def test_the_summary_is_a_line_per_metric_with_its_figures_by_dimension_values(aggregated):
    lines = aggregated.summary()
    assert len(lines) == 1 + len(metrics.METRICS)
    assert lines[0].startswith("metrics since ") and lines[0].endswith(": 20 EMF documents in RunbookBot")
    assert "  RunsStarted (runbook/trigger) 2: throttle/alarm 1, throttle/slash 1" in lines
    assert "  RunsEnded (runbook/status) 2: throttle/SUCCEEDED 1, throttle/TIMED_OUT 1" in lines
    assert "  SlackErrors (kind) 3: ratelimited 2, channel_not_found 1" in lines
    (steps,) = [line for line in lines if line.startswith("  StepDuration")]
    assert steps.startswith(
        "  StepDuration (action) p50/p99/max ms: dynamodb.replay 2200, dynamodb.hot_keys 900, "
    )
    assert "dynamodb.describe 40/60/60 ×2" in steps
    (approvals,) = [line for line in lines if line.startswith("  ApprovalWait")]
    assert approvals == (
        "  ApprovalWait (decision/runbook) p50/p99/max s: expired/throttle 900, "
        "approved/throttle 35.5/80/80 ×2"
    )
    assert not any("service" in line or "runbook-bot" in line for line in lines)


def test_a_long_line_ends_with_how_many_more_there_are():
    aggregator = EmfAggregator()
    for i in range(40):
        aggregator.observe(emf(kind=f"some_slack_error_code_{i:02}", SlackErrors=1))
    lines = aggregator.summary(width=120)
    assert all(len(line) <= 120 for line in lines)
    assert lines[1].startswith("  SlackErrors (kind) 40: some_slack_error_code_")
    shown = lines[1].count("some_slack_error_code_")
    assert lines[1].endswith(f", +{40 - shown} more")


def test_nothing_recorded_is_one_line():
    (line,) = EmfAggregator().summary()
    assert line.startswith("metrics since ") and line.endswith(": 0 EMF documents; nothing recorded yet")


def test_the_version_moves_only_when_something_was_recorded():
    aggregator = EmfAggregator()
    aggregator.observe('{"level":"INFO","message":"advanced"}')
    aggregator.observe(emf(kind="ratelimited", SlackErrors="x"))
    assert aggregator.version == 0
    aggregator.observe(emf(kind="ratelimited", SlackErrors=1))
    assert aggregator.version == 1
