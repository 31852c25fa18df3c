"""CloudWatch: a table's DynamoDB metrics over a window, and the verdict an engineer would draw."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bot.actions.base import ActionContext, StepOutcome, register
from bot.actions.dynamodb import TABLE, capacity_of, describe_table

METRICS = {
    "write_throttles": ("WriteThrottleEvents", "Sum"),
    "read_throttles": ("ReadThrottleEvents", "Sum"),
    "throttled_requests": ("ThrottledRequests", "Sum"),
    "consumed_wcu": ("ConsumedWriteCapacityUnits", "Sum"),
    "consumed_rcu": ("ConsumedReadCapacityUnits", "Sum"),
    "latency": ("SuccessfulRequestLatency", "Maximum"),
    "system_errors": ("SystemErrors", "Sum"),
    "returned_items": ("ReturnedItemCount", "Sum"),
}


class Metrics:
    name = "cloudwatch.metrics"
    outputs: tuple[str, ...] = (
        "throttled_minutes",
        "throttled_writes",
        "throttled_reads",
        "peak_write_ratio",
        "peak_read_ratio",
        "max_latency_ms",
        "system_errors",
        "window_minutes",
        "verdict",
        "throttling",
    )
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["table"],
        "additionalProperties": False,
        "properties": {
            "table": TABLE,
            "window_seconds": {"type": ["integer", "string"]},
            "index": {"type": "string"},
            "namespace": {"type": "string"},
        },
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        table = inputs["table"]
        window = int(inputs.get("window_seconds") or 900)
        end = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)
        start = end - dt.timedelta(seconds=window)
        dims = [{"Name": "TableName", "Value": table}]
        if inputs.get("index"):
            dims.append({"Name": "GlobalSecondaryIndexName", "Value": inputs["index"]})
        queries = [
            {
                "Id": key,
                "ReturnData": True,
                "MetricStat": {
                    "Metric": {
                        "Namespace": inputs.get("namespace", "AWS/DynamoDB"),
                        "MetricName": metric,
                        "Dimensions": dims,
                    },
                    "Period": 60,
                    "Stat": stat,
                },
            }
            for key, (metric, stat) in METRICS.items()
        ]
        series: dict[str, list[float]] = {k: [] for k in METRICS}
        token = None
        while True:
            answer = ctx.aws.client("cloudwatch").get_metric_data(
                MetricDataQueries=queries,
                StartTime=start,
                EndTime=end,
                **({"NextToken": token} if token else {}),
            )
            for result in answer["MetricDataResults"]:
                series[result["Id"]] += [float(v) for v in result.get("Values", [])]
            token = answer.get("NextToken")
            if not token:
                break
        _, read_units, write_units = capacity_of(describe_table(ctx, table))
        throttled_minutes = sum(
            1 for w, r in _zip(series["write_throttles"], series["read_throttles"]) if w + r > 0
        )
        peak_w = max(series["consumed_wcu"], default=0) / 60 / write_units if write_units else 0.0
        peak_r = max(series["consumed_rcu"], default=0) / 60 / read_units if read_units else 0.0
        outputs: dict[str, Any] = {
            "throttled_minutes": throttled_minutes,
            "throttled_writes": int(sum(series["write_throttles"])),
            "throttled_reads": int(sum(series["read_throttles"])),
            "peak_write_ratio": round(peak_w, 2),
            "peak_read_ratio": round(peak_r, 2),
            "max_latency_ms": round(max(series["latency"], default=0.0), 1),
            "system_errors": int(sum(series["system_errors"])),
            "window_minutes": window // 60,
        }
        outputs["throttling"] = throttled_minutes > 0
        verdict = (
            f"throttled for {throttled_minutes} of the last {window // 60} minutes"
            + (f", peak {peak_w:.1f}× provisioned writes" if peak_w else "")
            + (
                f", {outputs['throttled_writes']:,} write and {outputs['throttled_reads']:,} read throttle events"
            )
        )
        if not throttled_minutes:
            verdict = f"no throttling in the last {window // 60} minutes"
        outputs["verdict"] = verdict
        return StepOutcome.done(
            f"{table}: {verdict}",
            outputs,
            throttled_minutes=throttled_minutes,
            throttled_writes=outputs["throttled_writes"],
            peak_write_ratio=outputs["peak_write_ratio"],
            max_latency_ms=outputs["max_latency_ms"],
        )

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return f"reads CloudWatch metrics of {inputs.get('table')}; changes nothing"


def _zip(a: list[float], b: list[float]) -> list[tuple[float, float]]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0.0, b[i] if i < len(b) else 0.0) for i in range(n)]


METRICS_ACTION = register(Metrics())
