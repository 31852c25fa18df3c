"""The bot's own metrics (CONTRACT §6): EMF documents CloudWatch turns into metrics, in the
template's namespace, charted by the template's dashboard under the same names and dimensions."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from bot import metrics
from bot.local.template import TEMPLATE_PATH, _CfnLoader

RECORDERS = {
    metrics.RUNS_STARTED: lambda: metrics.run_started("throttle", "alarm", execution_id="rb-1"),
    metrics.RUNS_ENDED: lambda: metrics.run_ended("throttle", "SUCCEEDED", execution_id="rb-1"),
    metrics.STEP_DURATION: lambda: metrics.step_duration("dynamodb.replay", 1234.5, execution_id="rb-1"),
    metrics.APPROVAL_WAIT: lambda: metrics.approval_wait("replay", "approved", 95.0, execution_id="rb-1"),
    metrics.SLACK_ERRORS: lambda: metrics.slack_error("ratelimited", execution_id="rb-1"),
    metrics.STREAM_RECORD_AGE: lambda: metrics.stream_record_age("worker", 850.0, execution_id="rb-1"),
}


@pytest.fixture(autouse=True)
def lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "RunbookBotTest")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "runbook-bot")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


def recorded(name: str) -> dict[str, Any]:
    with metrics.collected() as documents:
        RECORDERS[name]()
    (document,) = documents
    return document


def definition(document: dict[str, Any]) -> dict[str, Any]:
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    return dict(directive)


def test_every_metric_has_a_recording_function():
    assert set(RECORDERS) == set(metrics.METRICS)


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_a_metric_is_one_emf_document_in_the_configured_namespace(name):
    document = recorded(name)
    directive = definition(document)
    assert directive["Namespace"] == "RunbookBotTest"
    unit, dimensions = metrics.METRICS[name]
    assert directive["Metrics"] == [{"Name": name, "Unit": unit.value}]
    (dimension_set,) = directive["Dimensions"]
    assert sorted(dimension_set) == sorted([*dimensions, "service"])
    for key in dimension_set:
        assert isinstance(document[key], str) and document[key], key
    assert document["service"] == "runbook-bot"
    (value,) = document[name] if isinstance(document[name], list) else [document[name]]
    assert math.isfinite(value) and value > 0
    assert isinstance(document["_aws"]["Timestamp"], int)
    # The execution id correlates the metric with the run's log lines without becoming a dimension.
    assert document["execution_id"] == "rb-1"
    assert "execution_id" not in dimension_set


def test_values_keep_their_unit_scale():
    assert recorded(metrics.STEP_DURATION)[metrics.STEP_DURATION] == [1234.5]
    assert recorded(metrics.APPROVAL_WAIT)[metrics.APPROVAL_WAIT] == [95.0]
    assert recorded(metrics.RUNS_ENDED)["status"] == "SUCCEEDED"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_value_cloudwatch_would_drop_is_not_recorded_and_never_raises(bad):
    with metrics.collected() as documents:
        metrics.step_duration("dynamodb.replay", bad)
    assert documents == []
    with pytest.raises(ValueError, match="finite"):
        metrics.emf_document(metrics.STEP_DURATION, bad, {"action": "dynamodb.replay"})


def test_a_metric_with_other_dimensions_is_refused_with_the_expected_ones():
    with pytest.raises(ValueError, match="runbook, status"):
        metrics.emf_document(metrics.RUNS_ENDED, 1, {"partner": "partner-acme"})
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.emf_document("Runs", 1, {})


def test_an_empty_dimension_value_is_still_a_value():
    document = metrics.emf_document(metrics.SLACK_ERRORS, 1, {"kind": ""})
    assert document["kind"] == "unknown"


def test_powertools_switch_turns_metrics_off(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    with metrics.collected() as documents:
        for record in RECORDERS.values():
            record()
    assert documents == []


def test_in_lambda_documents_go_to_stdout_one_line_each(monkeypatch, capsys):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "runbook-bot-WorkerFunction")
    previous = metrics.publish_to(None)
    try:
        metrics.run_started("throttle", "slash")
        metrics.slack_error("http_5xx")
    finally:
        metrics.publish_to(previous)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] for line in lines] == [
        metrics.RUNS_STARTED,
        metrics.SLACK_ERRORS,
    ]


def test_outside_lambda_documents_go_nowhere_until_a_sink_is_installed(monkeypatch, capsys):
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    previous = metrics.publish_to(None)
    try:
        metrics.run_started("throttle", "slash")
    finally:
        metrics.publish_to(previous)
    assert capsys.readouterr().out == ""


# -- the dashboard charts what the code records ----------------------------------------------------


def dashboard_searches() -> list[tuple[str, set[str], str]]:
    """(namespace placeholder, dimension names, metric name) of every SEARCH in the dashboard."""
    import yaml

    raw = yaml.load(TEMPLATE_PATH.read_text(), Loader=_CfnLoader)
    (body,) = [
        r["Properties"]["DashboardBody"]["Fn::Sub"]
        for r in raw["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    found = []
    for schema, name in re.findall(r"SEARCH\('\{(.+?)\} MetricName=\\\"(\w+)\\\"", body):
        namespace, *dimensions = schema.split(",")
        found.append((namespace, set(dimensions), name))
    return found


def test_the_dashboard_searches_each_metric_in_the_templates_namespace_with_its_dimensions():
    searches = dashboard_searches()
    assert searches, "the dashboard charts the bot's own metrics"
    by_name = {name: (namespace, dimensions) for namespace, dimensions, name in searches}
    assert set(by_name) == set(metrics.METRICS)
    assert len(by_name) == len(searches), "one chart per metric"
    for name, (namespace, dimensions) in by_name.items():
        assert namespace == "${MetricsNamespace}"
        # SEARCH matches a metric only under exactly its dimension set: service comes from Powertools.
        assert dimensions == {*metrics.METRICS[name][1], "service"}, name
        assert sorted(definition(recorded(name))["Dimensions"][0]) == sorted(dimensions)


def test_the_default_namespace_is_the_templates():
    import yaml

    raw = yaml.load(TEMPLATE_PATH.read_text(), Loader=_CfnLoader)
    assert raw["Parameters"]["MetricsNamespace"]["Default"] == metrics.DEFAULT_NAMESPACE


# -- listeners: the local stack's view of the same lines ----------------------------------------


def test_a_listener_hears_each_document_as_the_line_lambda_writes(monkeypatch, capsys):
    heard: list[str] = []
    stop = metrics.listen(heard.append)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "runbook-bot-TimelineFunction")
    previous = metrics.publish_to(None)
    try:
        metrics.slack_error("ratelimited", execution_id="rb-1")
    finally:
        metrics.publish_to(previous)
        stop()
    (printed,) = capsys.readouterr().out.splitlines()
    assert heard == [printed]
    metrics.slack_error("ratelimited")
    assert len(heard) == 1  # stopped


def test_a_failing_listener_never_fails_the_work_nor_the_other_listeners(caplog):
    def broken(line: str) -> None:
        raise RuntimeError("the console is gone")

    heard: list[str] = []
    stops = [metrics.listen(broken), metrics.listen(heard.append)]
    try:
        with metrics.collected() as documents:
            metrics.run_started("throttle", "slash", execution_id="rb-1")
    finally:
        for stop in stops:
            stop()
    assert len(documents) == 1 and len(heard) == 1
    assert json.loads(heard[0]) == documents[0]
    assert "a metrics listener failed" in caplog.text


def test_switched_off_metrics_reach_no_listener(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "1")
    heard: list[str] = []
    stop = metrics.listen(heard.append)
    try:
        for record in RECORDERS.values():
            record()
    finally:
        stop()
    assert heard == []
