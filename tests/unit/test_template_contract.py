"""template.yaml against CONTRACT §1–§2 and the code that relies on it."""

from __future__ import annotations

import importlib
import json

import pytest

from bot.local.template import load_template
from bot.store import keys

TEMPLATE = load_template()
RESOURCES = TEMPLATE.resources
FUNCTIONS = TEMPLATE.functions()
GLOBAL_FN = TEMPLATE.globals  # the template's Globals.Function


def prop(function: str, name: str):
    return FUNCTIONS[function].get(name, GLOBAL_FN.get(name))


def statements(function: str) -> list[dict]:
    found = []
    for policy in FUNCTIONS[function].get("Policies", []):
        if isinstance(policy, dict):
            found += policy.get("Statement", [])
    return found


def events(function: str, kind: str) -> list[dict]:
    return [e["Properties"] for e in (FUNCTIONS[function].get("Events") or {}).values() if e["Type"] == kind]


def test_the_executions_table_is_what_the_store_writes_and_the_contract_promises():
    table = RESOURCES["ExecutionsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": keys.TTL_ATTRIBUTE, "Enabled": True}
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        (keys.PK, "HASH"),
        (keys.SK, "RANGE"),
    ]
    (due,) = table["GlobalSecondaryIndexes"]
    assert due["IndexName"] == keys.DUE_INDEX
    assert [k["AttributeName"] for k in due["KeySchema"]] == [keys.DUE_BUCKET, keys.DUE_AT]


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_is_arm64_python312_with_an_importable_handler_and_kept_logs(function):
    assert prop(function, "Runtime") == "python3.12"
    assert prop(function, "Architectures") == ["arm64"]
    module, _, name = FUNCTIONS[function]["Handler"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    group = FUNCTIONS[function]["LoggingConfig"]["LogGroup"]["Ref"]
    assert RESOURCES[group]["Type"] == "AWS::Logs::LogGroup"
    assert "RetentionInDays" in RESOURCES[group]["Properties"]


def test_powertools_and_slack_settings_reach_every_function():
    env = GLOBAL_FN["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "runbook-bot"
    assert env["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert env["SLACK_SECRET_ARN"] == {"Ref": "SlackSecretArn"}
    assert env["SLACK_API_URL"] == {"Ref": "SlackApiUrl"}
    assert env["EXECUTIONS_TABLE"] == {"Ref": "ExecutionsTable"}


def test_exactly_one_function_faces_slack_on_an_http_api_with_payload_2():
    facing = [f for f in FUNCTIONS if events(f, "HttpApi")]
    assert facing == ["IngressFunction"]
    (api,) = events("IngressFunction", "HttpApi")
    assert (api["Method"], api["Path"], api["PayloadFormatVersion"]) == ("POST", "/slack/events", "2.0")


@pytest.mark.parametrize("function", ["WorkerFunction", "TimelineFunction"])
def test_stream_consumers_filter_bisect_bound_retries_and_keep_failures(function):
    (stream,) = events(function, "DynamoDB")
    assert stream["Stream"] == {"Fn::GetAtt": ["ExecutionsTable", "StreamArn"]}
    assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert stream["BisectBatchOnFunctionError"] is True
    assert 0 <= stream["MaximumRetryAttempts"] <= 10
    assert stream["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["StreamFailureQueue", "Arn"]
    }
    patterns = [json.loads(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]]
    assert patterns and all("dynamodb" in p for p in patterns)


def test_time_and_alarms_arrive_on_a_schedule_and_an_eventbridge_rule():
    (schedule,) = events("SweeperFunction", "ScheduleV2")
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    (rule,) = events("AlarmFunction", "EventBridgeRule")
    assert rule["Pattern"]["source"] == ["aws.cloudwatch"]
    assert rule["Pattern"]["detail-type"] == ["CloudWatch Alarm State Change"]
    assert rule["Pattern"]["detail"]["state"]["value"] == ["ALARM"]


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_no_statement_grants_everything_on_the_bots_own_table(function):
    for statement in statements(function):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert "*" not in actions and "dynamodb:*" not in actions, statement
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if any(a.startswith("dynamodb:") for a in actions):
            assert "*" not in resources, statement


def test_only_the_ingress_writes_without_a_stream_and_nothing_invokes_another_function():
    for function in FUNCTIONS:
        for statement in statements(function):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not any(a.startswith("lambda:Invoke") for a in actions), (function, statement)
