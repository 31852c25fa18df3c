"""The bot's own metrics: CloudWatch embedded metric format (EMF) lines in the functions' logs.

One function per metric, each writing one EMF document through Powertools' CloudWatch EMF
provider: CloudWatch Logs turns it into a metric, so recording one costs no API call and no
latency. The namespace is POWERTOOLS_METRICS_NAMESPACE (template.yaml's `MetricsNamespace`),
the `service` dimension POWERTOOLS_SERVICE_NAME. Dimensions stay few and bounded (runbook,
status, action, kind, ...): every distinct combination is a custom metric that costs money; the
execution id, which correlates a metric with the run's log lines, travels as metadata.

In Lambda the documents go to stdout, which is the function's log group. Elsewhere (the local
pipeline, tests) they go nowhere until a sink is installed with `publish_to`, so a console
stays readable. Listeners (`listen`) get each document as the very log line Lambda would write,
besides the sink: the local stack aggregates those lines to show the same metrics.

The template's dashboard charts these metrics by name and dimensions: change both together
(tests/unit/test_metrics.py checks that they agree).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

logger = Logger()

DEFAULT_NAMESPACE = "RunbookBot"  # template.yaml's MetricsNamespace default

Document = dict[str, Any]
Sink = Callable[[Document], None]
Listener = Callable[[str], None]

RUNS_STARTED = "RunsStarted"
RUNS_ENDED = "RunsEnded"
STEP_DURATION = "StepDuration"
APPROVAL_WAIT = "ApprovalWait"
SLACK_ERRORS = "SlackErrors"
STREAM_RECORD_AGE = "StreamRecordAge"

# Metric name -> its unit and the dimensions it is recorded with (besides `service`).
METRICS: dict[str, tuple[MetricUnit, tuple[str, ...]]] = {
    RUNS_STARTED: (MetricUnit.Count, ("runbook", "trigger")),
    RUNS_ENDED: (MetricUnit.Count, ("runbook", "status")),
    STEP_DURATION: (MetricUnit.Milliseconds, ("action",)),
    APPROVAL_WAIT: (MetricUnit.Seconds, ("runbook", "decision")),
    SLACK_ERRORS: (MetricUnit.Count, ("kind",)),
    STREAM_RECORD_AGE: (MetricUnit.Milliseconds, ("consumer",)),
}


def run_started(runbook: str, trigger: str, execution_id: str = "") -> None:
    """A run began (its first transition out of PENDING); `trigger` is slash, alarm, drill,
    button (Run this plan), or plan (a plan's start: plans are counted nowhere else)."""
    _record(RUNS_STARTED, 1, {"runbook": runbook, "trigger": trigger}, execution_id)


def run_ended(runbook: str, status: str, execution_id: str = "") -> None:
    """A run reached a final status: SUCCEEDED, FAILED, CANCELLED or TIMED_OUT."""
    _record(RUNS_ENDED, 1, {"runbook": runbook, "status": status}, execution_id)


def step_duration(action: str, milliseconds: float, execution_id: str = "") -> None:
    """How long one step attempt took, by action kind (dynamodb.replay, cloudwatch.metrics, ...)."""
    _record(STEP_DURATION, milliseconds, {"action": action}, execution_id)


def approval_wait(runbook: str, decision: str, seconds: float, execution_id: str = "") -> None:
    """From an approval request to its decision: approved, rejected or expired."""
    _record(APPROVAL_WAIT, seconds, {"runbook": runbook, "decision": decision}, execution_id)


def slack_error(kind: str, execution_id: str = "") -> None:
    """A Slack Web API call that failed: ratelimited, http_5xx, timeout, or Slack's error code."""
    _record(SLACK_ERRORS, 1, {"kind": kind}, execution_id)


def stream_record_age(consumer: str, milliseconds: float, execution_id: str = "") -> None:
    """From a stream record's creation to its handling by `consumer` (worker, timeline)."""
    _record(STREAM_RECORD_AGE, milliseconds, {"consumer": consumer}, execution_id)


def emf_document(name: str, value: float, dimensions: dict[str, str], execution_id: str = "") -> Document:
    """One metric as an EMF document, checked by Powertools against CloudWatch's EMF schema.

    Raises
    ------
    ValueError
        `name` is not one of METRICS, `dimensions` are not the ones it is recorded with, or
        `value` is not a finite number (CloudWatch drops a log line that carries NaN or infinity).
    """
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; the bot records {', '.join(sorted(METRICS))}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} needs a finite number, not {value!r}")
    unit, expected = METRICS[name]
    if tuple(sorted(dimensions)) != tuple(sorted(expected)):
        raise ValueError(
            f"{name} is recorded with dimensions {', '.join(expected)}, not {', '.join(dimensions)}"
        )
    provider = AmazonCloudWatchEMFProvider(
        namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE
    )
    provider.add_metric(name=name, unit=unit, value=value)
    for dimension, dimension_value in dimensions.items():
        # CloudWatch refuses empty dimension values; an unknown value is still a value.
        provider.add_dimension(name=dimension, value=str(dimension_value) or "unknown")
    if execution_id:
        provider.add_metadata(key="execution_id", value=execution_id)
    return dict(provider.serialize_metric_set())


def to_line(document: Document) -> str:
    """The document as one log line, exactly as the function writes it to its log group."""
    return json.dumps(document, separators=(",", ":"))


def to_stdout(document: Document) -> None:
    print(to_line(document), flush=True)


def _discard(document: Document) -> None:
    return None


def _default_sink() -> Sink:
    return to_stdout if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else _discard


_sink_lock = threading.Lock()
_sink: Sink = _default_sink()


def publish_to(sink: Sink | None) -> Sink:
    """Send every following document to `sink` (None: the default, stdout in Lambda and nowhere
    elsewhere); returns the sink it replaces."""
    global _sink
    with _sink_lock:
        previous, _sink = _sink, sink or _default_sink()
        return previous


class _Listeners:
    """Replaced whole under the sink lock, so `_record` reads `current` without taking it."""

    current: tuple[Listener, ...] = ()


def listen(listener: Listener) -> Callable[[], None]:
    """Also hand every following document, as its log line, to `listener` (whatever the sink);
    returns the function that stops it. A listener that raises is logged, never propagated."""
    with _sink_lock:
        _Listeners.current = (*_Listeners.current, listener)

    def stop() -> None:
        with _sink_lock:
            _Listeners.current = tuple(other for other in _Listeners.current if other is not listener)

    return stop


@contextmanager
def collected() -> Iterator[list[Document]]:
    """The documents recorded inside the block, in order (tests, the local stack's summaries)."""
    documents: list[Document] = []
    lock = threading.Lock()

    def keep(document: Document) -> None:
        with lock:
            documents.append(document)

    previous = publish_to(keep)
    try:
        yield documents
    finally:
        publish_to(previous)


def _record(name: str, value: float, dimensions: dict[str, str], execution_id: str) -> None:
    if _metrics_disabled():
        return
    try:
        document = emf_document(name, value, dimensions, execution_id)
    except Exception:  # a metric never fails the work it measures (a failed record is retried)
        logger.warning(
            "metric not recorded", extra={"metric": name, "execution_id": execution_id}, exc_info=True
        )
        return
    _sink(document)
    listeners = _Listeners.current
    if listeners:
        line = to_line(document)
        for listener in listeners:
            try:
                listener(line)
            except Exception:
                logger.warning("a metrics listener failed", extra={"metric": name}, exc_info=True)


def _metrics_disabled() -> bool:
    return os.environ.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower() in {"1", "true", "yes", "on"}
