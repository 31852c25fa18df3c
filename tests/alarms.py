"""CloudWatch alarms as partners' guard alarms are: a DynamoDB latency alarm on moto."""

from __future__ import annotations

from typing import Any


def latency_alarm(cloudwatch: Any, name: str, state: str = "OK", reason: str = "fine") -> None:
    """Create the alarm `name` (average SuccessfulRequestLatency over 250 ms) in `state`."""
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        MetricName="SuccessfulRequestLatency",
        Namespace="AWS/DynamoDB",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=250,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)
