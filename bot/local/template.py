"""template.yaml as the local stack reads it: tables, queues, stream consumers, schedules.

The local pipeline and the tests create the bot's tables *from* the template (never from a
second hand-written schema) and wire stream consumers with the template's own batch sizes,
filters and failure settings.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
_TAGS = ("Ref", "Condition")
_FN_TAGS = (
    "GetAtt",
    "Sub",
    "If",
    "Equals",
    "Select",
    "Join",
    "Split",
    "FindInMap",
    "Not",
    "And",
    "Or",
    "Base64",
    "Cidr",
    "GetAZs",
    "ImportValue",
    "Transform",
)


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags, turned into their long form."""


def _construct(tag: str) -> Callable[[yaml.SafeLoader, yaml.Node], Any]:
    name = tag if tag in _TAGS else f"Fn::{tag}"

    def build(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return build


for _tag in (*_TAGS, *_FN_TAGS):
    _CfnLoader.add_constructor(f"!{_tag}", _construct(_tag))


@dataclass(frozen=True)
class StreamConsumer:
    logical_id: str
    handler: str
    table_logical_id: str
    batch_size: int
    maximum_batching_window_seconds: int
    filter_patterns: tuple[dict[str, Any], ...]
    maximum_retry_attempts: int
    bisect_on_error: bool
    report_batch_item_failures: bool
    on_failure_queue_logical_id: str | None
    timeout_seconds: int
    parallelization_factor: int = 1
    maximum_record_age_seconds: int = -1  # -1: the stream's 24 hours


@dataclass(frozen=True)
class ScheduledFunction:
    logical_id: str
    handler: str
    rate_seconds: int


@dataclass(frozen=True)
class Template:
    resources: dict[str, dict[str, Any]]
    globals: dict[str, Any]
    parameters: dict[str, Any]

    def tables(self) -> dict[str, dict[str, Any]]:
        return {
            lid: r.get("Properties", {})
            for lid, r in self.resources.items()
            if r["Type"] == "AWS::DynamoDB::Table"
        }

    def functions(self) -> dict[str, dict[str, Any]]:
        return {
            lid: r.get("Properties", {})
            for lid, r in self.resources.items()
            if r["Type"] == "AWS::Serverless::Function"
        }

    def stream_consumers(self) -> list[StreamConsumer]:
        consumers = []
        for lid, props in self.functions().items():
            for event in (props.get("Events") or {}).values():
                if event.get("Type") != "DynamoDB":
                    continue
                p = event.get("Properties", {})
                stream = p["Stream"]
                table = stream["Fn::GetAtt"][0] if "Fn::GetAtt" in stream else str(stream)
                filters = tuple(
                    json.loads(f["Pattern"]) for f in (p.get("FilterCriteria") or {}).get("Filters", [])
                )
                failure = ((p.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
                consumers.append(
                    StreamConsumer(
                        logical_id=lid,
                        handler=props["Handler"],
                        table_logical_id=table,
                        batch_size=int(p.get("BatchSize", 100)),
                        maximum_batching_window_seconds=int(p.get("MaximumBatchingWindowInSeconds", 0)),
                        filter_patterns=filters,
                        maximum_retry_attempts=int(p.get("MaximumRetryAttempts", -1)),
                        maximum_record_age_seconds=int(p.get("MaximumRecordAgeInSeconds", -1)),
                        bisect_on_error=bool(p.get("BisectBatchOnFunctionError", False)),
                        report_batch_item_failures="ReportBatchItemFailures"
                        in (p.get("FunctionResponseTypes") or []),
                        on_failure_queue_logical_id=failure["Fn::GetAtt"][0]
                        if isinstance(failure, dict)
                        else None,
                        timeout_seconds=int(props.get("Timeout", self.globals.get("Timeout", 3))),
                        parallelization_factor=int(p.get("ParallelizationFactor", 1)),
                    )
                )
        return consumers

    def scheduled_functions(self) -> list[ScheduledFunction]:
        found = []
        for lid, props in self.functions().items():
            for event in (props.get("Events") or {}).values():
                if event.get("Type") in {"Schedule", "ScheduleV2"}:
                    p = event.get("Properties", {})
                    expression = p.get("Schedule") or p.get("ScheduleExpression") or ""
                    found.append(ScheduledFunction(lid, props["Handler"], rate_seconds(expression)))
        return found

    def http_function(self) -> tuple[str, str]:
        return self._function_with_event({"HttpApi", "Api"})

    def alarm_function(self) -> tuple[str, str]:
        return self._function_with_event({"EventBridgeRule", "CloudWatchEvent"})

    def _function_with_event(self, kinds: set[str]) -> tuple[str, str]:
        for lid, props in self.functions().items():
            if any(e.get("Type") in kinds for e in (props.get("Events") or {}).values()):
                return lid, str(props["Handler"])
        raise LookupError(f"template.yaml has no function with a {' or '.join(sorted(kinds))} event")

    def function_environment(self, logical_id: str, resolved: dict[str, str]) -> dict[str, str]:
        """Globals' and the function's Environment.Variables, intrinsics resolved from `resolved`."""
        variables = {
            **(self.globals.get("Environment") or {}).get("Variables", {}),
            **(self.functions()[logical_id].get("Environment") or {}).get("Variables", {}),
        }
        return {name: self._resolve(value, resolved) for name, value in variables.items()}

    def _resolve(self, value: Any, resolved: dict[str, str]) -> str:
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            if ref in resolved:
                return resolved[ref]
            default = self.parameters.get(ref, {}).get("Default")
            return (
                ",".join(default)
                if isinstance(default, list)
                else str(default if default is not None else ref)
            )
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            return resolved.get(".".join(value["Fn::GetAtt"]), resolved.get(value["Fn::GetAtt"][0], ""))
        if isinstance(value, dict) and "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: self._resolve({"Ref": m.group(1)}, resolved), text)
        return str(value)


def rate_seconds(expression: str) -> int:
    """`rate(1 minute)`, `rate(5 minutes)`, `rate(2 hours)`; a cron expression counts as one minute."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        return 60
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


@cache
def _load(path: Path) -> Template:
    data = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    return Template(
        data.get("Resources") or {},
        (data.get("Globals") or {}).get("Function") or {},
        data.get("Parameters") or {},
    )


def load_template(path: Path | None = None) -> Template:
    return _load((path or TEMPLATE_PATH).resolve())


_CREATE_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
)


def create_tables(dynamodb: Any, template: Template, name_for: Callable[[str], str]) -> dict[str, str]:
    """Create every AWS::DynamoDB::Table of the template (idempotent); logical id → table name."""
    names = {}
    for lid, props in template.tables().items():
        given = props.get("TableName")
        name = given if isinstance(given, str) else name_for(lid)
        request = {k: props[k] for k in _CREATE_TABLE_KEYS if k in props}
        if "StreamSpecification" in request:
            request["StreamSpecification"] = {"StreamEnabled": True, **request["StreamSpecification"]}
        try:
            dynamodb.create_table(TableName=name, **request)
        except dynamodb.exceptions.ResourceInUseException:
            pass
        _wait_active(dynamodb, name)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            try:
                dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
            except dynamodb.exceptions.ClientError as error:
                if "already enabled" not in str(error).lower():
                    raise
        names[lid] = name
    return names


def create_queues(sqs: Any, template: Template, name_for: Callable[[str], str]) -> dict[str, str]:
    """Create every AWS::SQS::Queue of the template; logical id → queue URL."""
    return {
        lid: sqs.create_queue(QueueName=name_for(lid))["QueueUrl"]
        for lid, r in template.resources.items()
        if r["Type"] == "AWS::SQS::Queue"
    }


def _wait_active(dynamodb: Any, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = dynamodb.describe_table(TableName=name)["Table"]
        indexes = table.get("GlobalSecondaryIndexes") or []
        if table["TableStatus"] == "ACTIVE" and all(
            i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"table {name} did not become ACTIVE in {timeout}s")
