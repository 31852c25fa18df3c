"""template.yaml is the deployment's truth (CONTRACT §1–§2): the table the store writes, functions
Lambda can run, stream consumers that lose nothing, and least-privilege policies.

Parsed with bot/local/template.py's CloudFormation-aware loader, the same reading the local stack
uses, so a template that passes here is also the one `runbook-bot dev` builds its tables from.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import re
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from bot.local import filters
from bot.local.template import TEMPLATE_PATH, _CfnLoader, load_template
from bot.store import keys
from bot.store.model import Execution, Status

REPO = TEMPLATE_PATH.parent
TEMPLATE = load_template()
RAW = yaml.load(TEMPLATE_PATH.read_text(), Loader=_CfnLoader)
RESOURCES = TEMPLATE.resources
PARAMETERS = TEMPLATE.parameters
GLOBAL_FN = TEMPLATE.globals
FUNCTIONS = TEMPLATE.functions()
TABLE = RESOURCES["ExecutionsTable"]["Properties"]
STREAM_CONSUMERS = sorted(
    f
    for f, props in FUNCTIONS.items()
    if any(e["Type"] == "DynamoDB" for e in props.get("Events", {}).values())
)
TERMINAL = sorted(s.value for s in Status if s.terminal)
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192}
LOG_RETENTION_DAYS |= {2557, 2922, 3288, 3653}


def setting(function: str, name: str) -> Any:
    """A function property as deployed: its own value, else the Globals.Function one."""
    return FUNCTIONS[function].get(name, GLOBAL_FN.get(name))


def environment(function: str) -> dict[str, Any]:
    return {
        **(GLOBAL_FN.get("Environment") or {}).get("Variables", {}),
        **(FUNCTIONS[function].get("Environment") or {}).get("Variables", {}),
    }


def events(function: str, *kinds: str) -> list[dict[str, Any]]:
    return [
        e.get("Properties", {})
        for e in (FUNCTIONS[function].get("Events") or {}).values()
        if e["Type"] in kinds
    ]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(function: str) -> list[dict[str, Any]]:
    found = []
    for policy in FUNCTIONS[function].get("Policies") or []:
        if isinstance(policy, dict) and "Statement" in policy:
            found += as_list(policy["Statement"])
    return found


def all_statements() -> list[tuple[str, dict[str, Any]]]:
    return [(f, s) for f in sorted(FUNCTIONS) for s in statements(f)]


STATEMENTS = [
    pytest.param(f, s, id=f"{f}-{i}") for f in sorted(FUNCTIONS) for i, s in enumerate(statements(f))
]


def parameter_default(ref: dict[str, Any]) -> Any:
    return PARAMETERS[ref["Ref"]]["Default"]


# -- the executions table ------------------------------------------------------------------------


def test_the_bot_owns_exactly_one_table_and_it_is_the_executions_table():
    assert sorted(TEMPLATE.tables()) == ["ExecutionsTable"]
    assert GLOBAL_FN["Environment"]["Variables"]["EXECUTIONS_TABLE"] == {"Ref": "ExecutionsTable"}


def test_the_executions_table_is_on_demand_with_a_full_stream_pitr_and_encryption():
    assert TABLE["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in TABLE
    assert TABLE["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert TABLE["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert TABLE["SSESpecification"]["SSEEnabled"] is True


def test_the_table_expires_items_on_the_attribute_the_store_writes():
    assert TABLE["TimeToLiveSpecification"] == {"AttributeName": keys.TTL_ATTRIBUTE, "Enabled": True}
    # The state item's TTL is the Execution field of that name (codec writes fields by name).
    assert keys.TTL_ATTRIBUTE in {f.name for f in dataclasses.fields(Execution)}


def test_the_key_schema_is_the_one_bot_store_keys_builds():
    assert [(k["AttributeName"], k["KeyType"]) for k in TABLE["KeySchema"]] == [
        (keys.PK, "HASH"),
        (keys.SK, "RANGE"),
    ]
    key = keys.state_key("rb-x")
    assert set(key) == {keys.PK, keys.SK}
    assert all(isinstance(v, str) for v in key.values())


def index(name: str) -> dict[str, Any]:
    (found,) = [i for i in TABLE["GlobalSecondaryIndexes"] if i["IndexName"] == name]
    return found


def test_the_table_has_exactly_the_two_indexes_the_store_queries():
    # CloudFormation adds or removes one GSI per stack update: a third audience shares history-index.
    assert [i["IndexName"] for i in TABLE["GlobalSecondaryIndexes"]] == [keys.DUE_INDEX, keys.HISTORY_INDEX]


def test_the_history_index_is_keyed_and_projected_as_history_reads_it():
    from bot.store.history import PROJECTED

    history = index(keys.HISTORY_INDEX)
    assert [(k["AttributeName"], k["KeyType"]) for k in history["KeySchema"]] == [
        (keys.HISTORY_PK, "HASH"),
        (keys.HISTORY_AT, "RANGE"),
    ]
    assert history["Projection"]["ProjectionType"] == "INCLUDE"
    assert sorted(history["Projection"]["NonKeyAttributes"]) == sorted(PROJECTED)
    assert "ProvisionedThroughput" not in history
    projected = set(PROJECTED) - {keys.APPROVED_BY}
    assert projected <= {f.name for f in dataclasses.fields(Execution)}, (
        "a history line shows Execution fields"
    )


def test_the_sparse_due_index_is_keyed_as_the_sweeper_queries_it():
    due = index(keys.DUE_INDEX)
    assert due["IndexName"] == keys.DUE_INDEX
    assert [(k["AttributeName"], k["KeyType"]) for k in due["KeySchema"]] == [
        (keys.DUE_BUCKET, "HASH"),
        (keys.DUE_AT, "RANGE"),
    ]
    # The sweeper projects only the table's partition key: any projection carries the table keys.
    assert due["Projection"]["ProjectionType"] in {"KEYS_ONLY", "INCLUDE", "ALL"}
    assert "ProvisionedThroughput" not in due, "an on-demand table's index has no provisioned capacity"
    assert keys.DUE_AT in {f.name for f in dataclasses.fields(Execution)}


def test_attribute_definitions_are_exactly_the_key_attributes_with_the_types_the_store_writes():
    defined = {a["AttributeName"]: a["AttributeType"] for a in TABLE["AttributeDefinitions"]}
    assert len(defined) == len(TABLE["AttributeDefinitions"]), "an attribute is defined twice"
    used = {k["AttributeName"] for k in TABLE["KeySchema"]}
    for index in TABLE.get("GlobalSecondaryIndexes", []) + TABLE.get("LocalSecondaryIndexes", []):
        used |= {k["AttributeName"] for k in index["KeySchema"]}
    assert set(defined) == used, "CloudFormation rejects definitions that no key schema uses"
    assert defined == {
        keys.PK: "S",
        keys.SK: "S",
        keys.DUE_BUCKET: "S",
        keys.DUE_AT: "N",
        keys.HISTORY_PK: "S",
        keys.HISTORY_AT: "N",
    }
    assert all(isinstance(b, str) for b in keys.due_buckets())


def test_a_real_state_item_image_agrees_with_the_attribute_types():
    record = json.loads((REPO / "events" / "stream-insert.json").read_text())["Records"][0]
    image = record["dynamodb"]["NewImage"]
    for definition in TABLE["AttributeDefinitions"]:
        name, kind = definition["AttributeName"], definition["AttributeType"]
        if name in image:
            assert set(image[name]) == {kind}, (name, image[name])
    assert image[keys.DUE_BUCKET]["S"] in keys.due_buckets()


# -- every function --------------------------------------------------------------------------


def test_the_template_is_a_sam_template():
    assert RAW["Transform"] == "AWS::Serverless-2016-10-31"
    assert FUNCTIONS, "the template defines functions"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_runs_python312_on_arm64(function):
    assert setting(function, "Runtime") == "python3.12"
    assert setting(function, "Architectures") == ["arm64"]
    assert 1 <= setting(function, "Timeout") <= 900


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_logs_to_its_own_group_with_a_valid_retention(function):
    group = FUNCTIONS[function]["LoggingConfig"]["LogGroup"]
    assert set(group) == {"Ref"}, "the log group is a resource of this template"
    resource = RESOURCES[group["Ref"]]
    assert resource["Type"] == "AWS::Logs::LogGroup"
    retention = resource["Properties"]["RetentionInDays"]
    days = parameter_default(retention) if isinstance(retention, dict) else retention
    assert int(days) in LOG_RETENTION_DAYS
    others = [f for f in FUNCTIONS if f != function and FUNCTIONS[f]["LoggingConfig"]["LogGroup"] == group]
    assert not others, f"{function} shares its log group with {others}"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_configures_powertools_logging(function):
    env = environment(function)
    assert env.get("POWERTOOLS_SERVICE_NAME")
    level = env.get("POWERTOOLS_LOG_LEVEL", env.get("LOG_LEVEL"))
    assert level is not None, "POWERTOOLS_LOG_LEVEL or LOG_LEVEL"
    value = parameter_default(level) if isinstance(level, dict) else level
    assert value in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_handler_is_an_importable_callable_in_bot_handlers_under_its_code_uri(function):
    handler = FUNCTIONS[function]["Handler"]
    module_name, _, name = handler.rpartition(".")
    assert module_name.startswith("bot.handlers."), handler
    code_uri = REPO / setting(function, "CodeUri")
    assert (code_uri / (module_name.replace(".", "/") + ".py")).is_file(), (code_uri, handler)
    target = getattr(importlib.import_module(module_name), name)
    assert callable(target)
    inspect.signature(target).bind({"event": True}, object())  # Lambda calls handler(event, context)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_and_the_layer_are_built_by_a_makefile_target(function):
    makefile = (REPO / "Makefile").read_text()
    targets = {t for line in makefile.splitlines() if ":" in line for t in line.split(":")[0].split()}
    for logical_id in (function, "DependenciesLayer"):
        assert RESOURCES[logical_id]["Metadata"]["BuildMethod"] == "makefile"
        assert f"build-{logical_id}" in targets, logical_id


def test_every_function_uses_the_dependencies_layer_built_for_its_platform():
    for function in FUNCTIONS:
        assert {"Ref": "DependenciesLayer"} in setting(function, "Layers"), function
    layer = RESOURCES["DependenciesLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"]["BuildArchitecture"] == "arm64"


# -- configuration (CONTRACT §2) ----------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_gets_the_contract_configuration(function):
    env = environment(function)
    assert env["EXECUTIONS_TABLE"] == {"Ref": "ExecutionsTable"}
    assert env["SLACK_API_URL"] == {"Ref": "SlackApiUrl"}
    assert env["RUNBOOKS_DIR"] == "runbooks"
    assert env["SLACK_SECRET_ARN"] == {"Ref": "SlackSecretArn"}


def test_the_slack_secret_arn_is_a_parameter_and_the_only_secret_a_function_may_read():
    assert PARAMETERS["SlackSecretArn"]["Type"] == "String"
    assert parameter_default({"Ref": "SlackSecretArn"}).startswith("arn:aws:secretsmanager:")
    for function, statement in all_statements():
        if any(a.startswith("secretsmanager:") for a in as_list(statement["Action"])):
            assert as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"], function
            assert as_list(statement["Resource"]) == [{"Ref": "SlackSecretArn"}], function


def test_the_slack_api_url_defaults_to_slacks_own():
    assert PARAMETERS["SlackApiUrl"]["Default"] == "https://slack.com/api/"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_no_secret_value_or_private_endpoint_setting_is_in_the_environment(function):
    env = environment(function)
    assert "SLACK_SIGNING_SECRET" not in env and "SLACK_BOT_TOKEN" not in env
    endpoints = [n for n in env if "ENDPOINT" in n or (n.endswith("_URL") and n != "SLACK_API_URL")]
    assert endpoints == [], "AWS endpoints come only from the standard AWS_ENDPOINT_URL variables"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_environment_values_are_literals_refs_getatts_or_subs_of_things_the_template_has(function):
    for name, value in environment(function).items():
        if not isinstance(value, dict):
            assert isinstance(value, str | int | float | bool), name
            continue
        (kind,) = value
        assert kind in {"Ref", "Fn::GetAtt", "Fn::Sub"}, name
        if kind == "Ref":
            assert value["Ref"] in PARAMETERS or value["Ref"] in RESOURCES, name
        if kind == "Fn::GetAtt":
            assert value["Fn::GetAtt"][0] in RESOURCES, name


def test_every_variable_the_code_requires_is_set_by_the_template():
    required = set()
    for path in (REPO / "bot").rglob("*.py"):
        if path.parent.name in {"local", "drills"}:
            continue  # this machine's pipeline, never in Lambda
        required |= set(re.findall(r"os\.environ\[\s*[\"']([A-Z0-9_]+)[\"']\s*\]", path.read_text()))
    assert required, "the scan finds os.environ[...] reads"
    for function in FUNCTIONS:
        assert required <= set(environment(function)), (function, required - set(environment(function)))


# -- the Slack-facing function ----------------------------------------------------------------


def test_exactly_one_function_faces_slack_an_http_api_with_payload_format_2():
    facing = [f for f in FUNCTIONS if events(f, "HttpApi", "Api") or "FunctionUrlConfig" in FUNCTIONS[f]]
    assert facing == ["IngressFunction"]
    (api,) = events("IngressFunction", "HttpApi")
    assert api["PayloadFormatVersion"] == "2.0"  # the string: YAML's 2.0 would be a float
    assert api["Method"] == "POST"
    assert setting("IngressFunction", "Timeout") <= 30, "API Gateway's HTTP API gives up after 30 s"


def test_the_request_url_output_and_the_slack_manifest_name_the_ingress_path():
    (api,) = events("IngressFunction", "HttpApi")
    output = RAW["Outputs"]["SlackRequestUrl"]["Value"]["Fn::Sub"]
    assert urlparse(output).path == api["Path"]
    manifest = yaml.safe_load((REPO / "slack-manifest.yaml").read_text())
    urls = [c["url"] for c in manifest["features"]["slash_commands"] if c["command"] == "/runbook"]
    urls.append(manifest["settings"]["interactivity"]["request_url"])
    assert {urlparse(u).path for u in urls} == {api["Path"]}, "commands and buttons share one URL"


def test_the_ingress_invokes_nothing_and_queues_nothing():
    ingress = FUNCTIONS["IngressFunction"]
    assert "EventInvokeConfig" not in ingress
    for _, statement in [(f, s) for f, s in all_statements() if f == "IngressFunction"]:
        for action in as_list(statement["Action"]):
            assert action.split(":")[0] in {"dynamodb", "secretsmanager"}, action
    for function, statement in all_statements():
        assert not any(a.lower().startswith("lambda:") for a in as_list(statement["Action"])), function


# -- stream consumers ---------------------------------------------------------------------------


def test_the_worker_and_the_timeline_publisher_consume_the_executions_stream():
    assert STREAM_CONSUMERS == ["TimelineFunction", "WorkerFunction"]


@pytest.mark.parametrize("function", STREAM_CONSUMERS)
def test_a_stream_consumer_reports_partial_failures_bisects_and_bounds_retries(function):
    (stream,) = events(function, "DynamoDB")
    assert stream["Stream"] == {"Fn::GetAtt": ["ExecutionsTable", "StreamArn"]}
    assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert stream["BisectBatchOnFunctionError"] is True
    assert isinstance(stream["MaximumRetryAttempts"], int)
    assert 0 <= stream["MaximumRetryAttempts"] <= 10, "-1 (the default) retries until the record expires"
    assert 60 <= stream["MaximumRecordAgeInSeconds"] <= 21_600
    assert stream["StartingPosition"] in {"TRIM_HORIZON", "LATEST"}


@pytest.mark.parametrize("function", STREAM_CONSUMERS)
def test_what_exhausts_a_consumers_retries_lands_in_an_sqs_queue_of_the_template(function):
    (stream,) = events(function, "DynamoDB")
    on_failure = stream["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS", "SAM grants sqs:SendMessage only when Type is set"
    (queue, attribute) = on_failure["Destination"]["Fn::GetAtt"]
    assert (RESOURCES[queue]["Type"], attribute) == ("AWS::SQS::Queue", "Arn")


@pytest.mark.parametrize("function", STREAM_CONSUMERS)
def test_a_stream_consumer_filters_to_state_items(function):
    (stream,) = events(function, "DynamoDB")
    patterns = [json.loads(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]]
    assert 1 <= len(patterns) <= 5, "Lambda allows at most 5 filters per event source mapping"
    for pattern in patterns:
        image = pattern["dynamodb"].get("NewImage") or pattern["dynamodb"]["Keys"]  # TTL removes: Keys only
        # State items; the timeline consumer also takes evidence-file requests (no third reader).
        # ... and App Home requests.
        owned = (
            [keys.STATE_SK, keys.EXPORT_SK, keys.HOME_SK]
            if function == "TimelineFunction"
            else [keys.STATE_SK]
        )
        assert image["sk"]["S"] in [[sk] for sk in owned]


def stream_record(event_name: str = "MODIFY", sk: str = keys.STATE_SK, status: str = "RUNNING") -> dict:
    record = copy.deepcopy(json.loads((REPO / "events" / "stream-insert.json").read_text())["Records"][0])
    record["eventName"] = event_name
    image = record["dynamodb"]["NewImage"]
    image[keys.SK] = {"S": sk}
    image["status"] = {"S": status}
    record["dynamodb"]["Keys"][keys.SK] = {"S": sk}
    if event_name == "REMOVE":
        record["dynamodb"]["OldImage"] = record["dynamodb"].pop("NewImage")
    return record


def delivered(function: str, record: dict) -> bool:
    (stream,) = events(function, "DynamoDB")
    return filters.matches_any(
        [json.loads(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]], record
    )


@pytest.mark.parametrize("status", sorted(s.value for s in Status if not s.terminal))
@pytest.mark.parametrize("event_name", ["INSERT", "MODIFY"])
def test_both_consumers_see_every_active_state_transition(event_name, status):
    record = stream_record(event_name, status=status)
    assert delivered("WorkerFunction", record)
    assert delivered("TimelineFunction", record)


@pytest.mark.parametrize("status", TERMINAL)
def test_a_finished_run_reaches_the_timeline_but_not_the_worker(status):
    record = stream_record("MODIFY", status=status)
    assert not delivered("WorkerFunction", record)
    assert delivered("TimelineFunction", record), "the final state is a timeline event"


@pytest.mark.parametrize(
    "sk",
    [
        "CLAIM#0000000003",
        keys.SLACK_SK,
        "PROGRESS#replay",
        "OUTPUT#detect",
        "EFFECT#replay#1",
        "LOCK",
        keys.RECEIPT_SK,
        keys.REQUESTER_SK,
    ],
)
def test_the_bots_own_bookkeeping_items_reach_neither_consumer(sk):
    record = stream_record("INSERT", sk=sk)
    assert not delivered("WorkerFunction", record)
    assert not delivered("TimelineFunction", record)


def export_record(status: str = "requested", event_name: str = "INSERT") -> dict:
    record = stream_record(event_name, sk=keys.EXPORT_SK)
    image = record["dynamodb"]["NewImage"]
    image["export_status"] = {"S": status}
    image.pop("status", None)
    return record


def test_an_evidence_request_reaches_the_timeline_consumer_only():
    for event_name in ("INSERT", "MODIFY"):
        assert delivered("TimelineFunction", export_record(event_name=event_name))
        assert not delivered("WorkerFunction", export_record(event_name=event_name))


@pytest.mark.parametrize("status", ["uploading", "uploaded", "failed"])
def test_the_exporters_own_writes_of_the_request_reach_nobody(status):
    assert not delivered("TimelineFunction", export_record(status, "MODIFY"))
    assert not delivered("WorkerFunction", export_record(status, "MODIFY"))


def test_a_requesters_history_entry_reaches_nobody():
    record = stream_record("INSERT", sk=keys.REQUESTER_SK)
    assert not delivered("TimelineFunction", record)
    assert not delivered("WorkerFunction", record)


def test_the_ingress_may_query_the_history_index_and_no_other():
    queries = [s for s in statements("IngressFunction") if "dynamodb:Query" in as_list(s["Action"])]
    assert [s["Resource"] for s in queries] == [
        {"Fn::Sub": f"${{ExecutionsTable.Arn}}/index/{keys.HISTORY_INDEX}"}
    ]


def test_a_state_item_removed_by_ttl_reaches_the_worker_only_to_clean_up_after_it():
    record = stream_record("REMOVE")
    record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert delivered("WorkerFunction", record)
    assert not delivered("TimelineFunction", record)
    record["dynamodb"]["Keys"][keys.SK] = {"S": "OUTPUT#detect"}
    assert not delivered("WorkerFunction", record), "other items' expiries are not the worker's"


def test_deletes_by_anyone_but_ttl_reach_neither_consumer():
    record = stream_record("REMOVE")
    assert not delivered("WorkerFunction", record)
    assert not delivered("TimelineFunction", record)


# -- time and alarms ----------------------------------------------------------------------------


def test_the_sweeper_runs_on_a_schedule():
    (schedule,) = events("SweeperFunction", "Schedule", "ScheduleV2")
    expression = schedule.get("ScheduleExpression") or schedule.get("Schedule")
    assert re.fullmatch(r"rate\(\d+ (minute|minutes)\)|cron\(.+\)", expression), expression
    assert [s.logical_id for s in TEMPLATE.scheduled_functions()] == ["SweeperFunction"]


def test_the_alarm_function_starts_on_cloudwatch_alarms_entering_alarm():
    (rule,) = events("AlarmFunction", "EventBridgeRule", "CloudWatchEvent")
    pattern = rule["Pattern"]
    assert pattern["source"] == ["aws.cloudwatch"]
    assert pattern["detail-type"] == ["CloudWatch Alarm State Change"]
    assert pattern["detail"]["state"]["value"] == ["ALARM"]
    assert TEMPLATE.alarm_function() == ("AlarmFunction", "bot.handlers.alarm.handler")


def test_the_alarm_rule_accepts_the_sample_alarm_event():
    (rule,) = events("AlarmFunction", "EventBridgeRule")
    sample = json.loads((REPO / "events" / "alarm.json").read_text())
    assert filters.matches(rule["Pattern"], sample)
    leaving = copy.deepcopy(sample)
    leaving["detail"]["state"]["value"] = "OK"
    assert not filters.matches(rule["Pattern"], leaving)


# -- least privilege ------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_policies_are_inline_statements_not_broad_managed_policies(function):
    for policy in FUNCTIONS[function].get("Policies") or []:
        assert isinstance(policy, dict) and "Statement" in policy, (function, policy)


@pytest.mark.parametrize(("function", "statement"), STATEMENTS)
def test_no_statement_grants_every_action(function, statement):
    for action in as_list(statement["Action"]):
        assert action != "*" and action != "dynamodb:*", (function, statement)
        if action.startswith("dynamodb:"):
            assert "*" not in action, (function, action)


@pytest.mark.parametrize(("function", "statement"), STATEMENTS)
def test_table_statements_name_the_executions_table_never_every_resource(function, statement):
    if not any(a.startswith("dynamodb:") for a in as_list(statement["Action"])):
        return
    assert statement["Effect"] == "Allow"
    for resource in as_list(statement["Resource"]):
        assert resource != "*", (function, statement)
        if isinstance(resource, str):
            pytest.fail(f"{function}: a literal table ARN {resource!r} instead of the template's table")
        if "Fn::GetAtt" in resource:
            assert resource["Fn::GetAtt"] == ["ExecutionsTable", "Arn"], (function, resource)
        else:
            assert re.fullmatch(r"\$\{ExecutionsTable\.Arn\}/index/[\w.-]+", resource["Fn::Sub"]), resource


def test_the_sweeper_may_query_the_due_index_and_nothing_else():
    queries = [s for s in statements("SweeperFunction") if "dynamodb:Query" in as_list(s["Action"])]
    assert [s["Resource"] for s in queries] == [
        {"Fn::Sub": f"${{ExecutionsTable.Arn}}/index/{keys.DUE_INDEX}"}
    ]


# -- the bot's own health (CONTRACT §6) --------------------------------------------------------------

ALARMS = {lid: r["Properties"] for lid, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
CONDITIONS = RAW.get("Conditions") or {}
PSEUDO_PARAMETERS = {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::StackName", "AWS::URLSuffix"}


def logging_config(function: str) -> dict[str, Any]:
    """LoggingConfig as SAM deploys it: Globals' map merged with the function's own."""
    return {**(GLOBAL_FN.get("LoggingConfig") or {}), **(FUNCTIONS[function].get("LoggingConfig") or {})}


def dimension(alarm: dict[str, Any], name: str) -> Any:
    (value,) = [d["Value"] for d in alarm.get("Dimensions", []) if d["Name"] == name]
    return value


def alarms_on(namespace: str, metric: str) -> dict[str, dict[str, Any]]:
    return {
        lid: a
        for lid, a in ALARMS.items()
        if a.get("Namespace") == namespace and a.get("MetricName") == metric
    }


def function_alarms(metric: str) -> dict[str, dict[str, Any]]:
    """Function logical id -> the alarm on its AWS/Lambda `metric`."""
    found: dict[str, dict[str, Any]] = {}
    for alarm in alarms_on("AWS/Lambda", metric).values():
        function = dimension(alarm, "FunctionName")["Ref"]
        assert function not in found, f"two {metric} alarms on {function}"
        found[function] = alarm
    return found


def sub_references(text: str) -> set[str]:
    return {m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)}


def dashboard_body() -> tuple[str, dict[str, Any]]:
    (dashboard,) = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    text = dashboard["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str), "the body is one !Sub string over the template's own names"
    return text, json.loads(re.sub(r"\$\{([^}]*)\}", r"<\1>", text))


def dashboard_metrics() -> list[list[Any]]:
    _, body = dashboard_body()
    return [m for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]]


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_logs_json_filtered_at_the_powertools_level(function):
    config = logging_config(function)
    assert config["LogFormat"] == "JSON"
    assert set(config["LogGroup"]) == {"Ref"}, "its own group, merged with the JSON format from Globals"
    level = config["ApplicationLogLevel"]["Fn::FindInMap"]
    assert level[1] == environment(function)["POWERTOOLS_LOG_LEVEL"], "Lambda filters at Powertools' level"
    lambda_levels = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
    mapping = RAW["Mappings"][level[0]]
    for allowed in PARAMETERS["LogLevel"]["AllowedValues"]:
        assert mapping[allowed][level[2]] in lambda_levels, allowed
        assert mapping[allowed][level[2]][:4] == allowed[:4], "the same severity under Lambda's name"
    assert config.get("SystemLogLevel", "INFO") in {"DEBUG", "INFO", "WARN"}


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_records_metrics_in_the_templates_namespace(function):
    assert environment(function)["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert re.fullmatch(r"[A-Za-z][\w./#:-]{0,254}", PARAMETERS["MetricsNamespace"]["Default"])
    assert not PARAMETERS["MetricsNamespace"]["Default"].startswith("AWS/"), "AWS/ is reserved for AWS"


def test_every_alarm_notifies_the_alarm_topic_or_nobody_when_none_is_given():
    assert ALARMS, "the template defines the bot's alarms"
    assert PARAMETERS["AlarmTopicArn"]["Default"] == ""
    assert CONDITIONS["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    routed = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for lid, alarm in ALARMS.items():
        assert alarm["AlarmActions"] == routed, lid
        assert alarm["OKActions"] == routed, f"{lid}: a recovery is news too"
        assert alarm.get("ActionsEnabled", True) is True, lid


@pytest.mark.parametrize("alarm", sorted(ALARMS))
def test_every_alarm_is_well_formed_and_says_what_to_look_at(alarm):
    props = ALARMS[alarm]
    assert len(props.get("AlarmDescription", "")) >= 40, "the description is what the on-call reads first"
    assert props["Period"] in {10, 30} or props["Period"] % 60 == 0
    assert 1 <= props.get("DatapointsToAlarm", props["EvaluationPeriods"]) <= props["EvaluationPeriods"]
    assert props["TreatMissingData"] in {"breaching", "notBreaching"}
    assert "Statistic" in props or "ExtendedStatistic" in props


def test_an_alarm_fires_when_anything_reaches_the_stream_on_failure_queue():
    queues = set()
    for function in STREAM_CONSUMERS:
        (stream,) = events(function, "DynamoDB")
        queues.add(stream["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0])
    watched = {}
    for alarm in alarms_on("AWS/SQS", "ApproximateNumberOfMessagesVisible").values():
        watched[dimension(alarm, "QueueName")["Fn::GetAtt"][0]] = alarm
    assert set(watched) == queues
    for alarm in watched.values():
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["Statistic"] == "Maximum" and alarm["EvaluationPeriods"] == 1
        assert alarm["TreatMissingData"] == "notBreaching", "an empty queue publishes nothing to worry about"


def test_each_stream_mapping_has_an_iterator_age_alarm_well_inside_the_record_age_limit():
    alarms = function_alarms("IteratorAge")
    assert sorted(alarms) == STREAM_CONSUMERS
    for function, alarm in alarms.items():
        (stream,) = events(function, "DynamoDB")
        assert alarm["Statistic"] == "Maximum"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert 0 < alarm["Threshold"] <= stream["MaximumRecordAgeInSeconds"] * 1000 / 10, (
            "it must fire long before records start expiring into the on-failure queue"
        )


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_every_function_has_an_alarm_on_its_errors_and_throttles(metric):
    alarms = function_alarms(metric)
    assert sorted(alarms) == sorted(FUNCTIONS)
    for alarm in alarms.values():
        assert alarm["Statistic"] == "Sum"
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["Period"] * alarm["EvaluationPeriods"] <= 900


def test_an_alarm_fires_when_the_sweeper_has_not_run_for_five_minutes():
    (sweeper,) = [s.logical_id for s in TEMPLATE.scheduled_functions()]
    alarms = function_alarms("Invocations")
    assert list(alarms) == [sweeper]
    alarm = alarms[sweeper]
    assert alarm["Statistic"] == "Sum"
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 1)
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 300
    assert alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]) == alarm["EvaluationPeriods"], (
        "one run in the window is enough to stay OK"
    )
    assert alarm["TreatMissingData"] == "breaching", "a sweeper that never runs publishes no datapoint at all"
    (schedule,) = TEMPLATE.scheduled_functions()
    assert schedule.rate_seconds <= 60, "a healthy sweeper runs several times in the window"


def test_the_sweeper_knows_its_own_schedule_and_outlasts_its_turn_nudging():
    (schedule,) = TEMPLATE.scheduled_functions()
    sweeper = TEMPLATE.functions()[schedule.logical_id]
    every = float(sweeper["Environment"]["Variables"]["SWEEP_EVERY_SECONDS"])
    assert every == schedule.rate_seconds, "it nudges waiting timelines until the next scheduled sweep"
    assert float(sweeper["Timeout"]) >= every, "its nudging ends before its timeout, not at it"
    timeline = TEMPLATE.functions()["TimelineFunction"]
    assert float(timeline["Environment"]["Variables"]["SLACK_POSTS_PER_SECOND"]) == 1.0, (
        "Slack: about one post a second per channel"
    )


def test_the_dashboard_body_is_json_over_the_templates_own_names():
    text, body = dashboard_body()
    assert body["widgets"]
    unknown = sub_references(text) - set(RESOURCES) - set(PARAMETERS) - PSEUDO_PARAMETERS
    assert unknown - {"ServerlessHttpApi"} == set(), "SAM names the implicit HTTP API ServerlessHttpApi"
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24, widget
    cells = set()
    for widget in body["widgets"]:
        mine = {
            (x, y)
            for x in range(widget["x"], widget["x"] + widget["width"])
            for y in range(widget["y"], widget["y"] + widget["height"])
        }
        assert not cells & mine, f"widgets overlap at {sorted(cells & mine)[:3]}"
        cells |= mine


def test_the_dashboard_shows_every_alarm_and_every_function():
    _, body = dashboard_body()
    shown = {a for w in body["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"]}
    assert shown == {f"<{lid}.Arn>" for lid in ALARMS}
    for metric in ("Invocations", "Errors", "Throttles", "Duration"):
        charted = {
            m[3]
            for m in dashboard_metrics()
            if isinstance(m[0], str) and m[:3] == ["AWS/Lambda", metric, "FunctionName"]
        }
        assert charted == {f"<{f}>" for f in FUNCTIONS}, metric
    iterator = {m[3] for m in dashboard_metrics() if m[:2] == ["AWS/Lambda", "IteratorAge"]}
    assert iterator == {f"<{f}>" for f in STREAM_CONSUMERS}
    queue = [m for m in dashboard_metrics() if m[:2] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible"]]
    assert [m[3] for m in queue] == ["<StreamFailureQueue.QueueName>"]


# -- the Slack request URL's throttling (issue 9) --------------------------------------------------


def test_the_slack_request_url_is_throttled_at_a_rate_slack_never_needs():
    routes = RAW["Globals"]["HttpApi"]["DefaultRouteSettings"]
    rate, burst = routes["ThrottlingRateLimit"], routes["ThrottlingBurstLimit"]
    # Slack sends what people type and click: a channel's approvers clicking at once is a burst of
    # a few dozen; a sustained flood above that is not Slack, and API Gateway answers it with 429.
    assert 10 <= rate <= 100
    assert max(rate, 20) <= burst <= 500
    explicit = [r for r in RESOURCES.values() if r["Type"] == "AWS::Serverless::HttpApi"]
    assert explicit == [], "the Slack event uses SAM's implicit API, which takes Globals.HttpApi"


# -- only what each function uses -----------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_only_functions_that_talk_to_slack_may_read_the_slack_secret(function):
    module = FUNCTIONS[function]["Handler"].rpartition(".")[0]
    source = (REPO / (module.replace(".", "/") + ".py")).read_text()
    reads = any(a.startswith("secretsmanager:") for s in statements(function) for a in as_list(s["Action"]))
    assert reads == ("services.secrets" in source or "services.publisher()" in source), (
        f"{function}: {'unused' if reads else 'missing'} secret permission"
    )


def test_the_worker_never_reads_the_slack_secret():
    actions = {a for s in statements("WorkerFunction") for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith("secretsmanager:")}
    source = (REPO / "bot" / "handlers" / "worker.py").read_text()
    assert "services.secrets" not in source and "services.publisher" not in source


def test_the_roles_that_assume_partner_roles_are_outputs_for_the_partner_template():
    assuming = sorted(f for f in FUNCTIONS for s in statements(f) if "sts:AssumeRole" in as_list(s["Action"]))
    outputs = {
        name: o["Value"]["Fn::GetAtt"]
        for name, o in RAW["Outputs"].items()
        if isinstance(o["Value"], dict) and "Fn::GetAtt" in o["Value"] and name.endswith("RoleArn")
    }
    assert sorted(v[0] for v in outputs.values()) == sorted(f"{f}Role" for f in assuming)
    assert all(v[1] == "Arn" for v in outputs.values())


# -- partners' alarms reach the alarm function -------------------------------------------------------


def test_partner_accounts_may_put_only_cloudwatch_alarm_events_on_the_alarm_functions_bus():
    (rule,) = events("AlarmFunction", "EventBridgeRule")
    bus = rule.get("EventBusName", "default")
    (policy,) = [
        (r, r["Properties"]) for r in RESOURCES.values() if r["Type"] == "AWS::Events::EventBusPolicy"
    ]
    resource, props = policy
    assert resource["Condition"] == "HasPartnerAccounts"
    assert CONDITIONS["HasPartnerAccounts"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "PartnerAccountIds"}]}, ""]}]
    }
    assert PARAMETERS["PartnerAccountIds"]["Type"] == "CommaDelimitedList"
    assert PARAMETERS["PartnerAccountIds"]["Default"] == "", "no partner account is trusted by default"
    assert props["EventBusName"] == bus
    statement = props["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "events:PutEvents")
    assert statement["Resource"]["Fn::Sub"].endswith(f":event-bus/{bus}")
    condition = statement["Condition"]
    assert condition["StringEquals"]["aws:PrincipalAccount"] == {"Ref": "PartnerAccountIds"}
    assert [condition["StringEquals"]["events:detail-type"]] == rule["Pattern"]["detail-type"]
    assert condition["ForAllValues:StringEquals"]["events:source"] == rule["Pattern"]["source"]
    if statement["Principal"] == "*":
        assert "aws:PrincipalAccount" in condition["StringEquals"], "only the partners' accounts"


def test_the_local_stack_reads_each_stream_consumers_record_age_limit():
    from bot.local.template import load_template

    consumers = {c.logical_id: c for c in load_template().stream_consumers()}
    for function in STREAM_CONSUMERS:
        (stream,) = events(function, "DynamoDB")
        assert consumers[function].maximum_record_age_seconds == stream["MaximumRecordAgeInSeconds"]


# What each function's code asks of the executions table (ExecutionStore, PostsStore):
TABLE_CALLS = {
    # runs and their locks (a transaction of puts), claims taken and given back, decisions, cancels,
    # evidence requests; history pages (a Query of history-index); a retry's transaction (state
    # update, lock puts, output checks, the failed step's progress deleted)
    "IngressFunction": {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "ConditionCheckItem"},
    # claims, commits, progress and spilled outputs; the purge of an expired run (query + deletes)
    "WorkerFunction": {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"},
    # the publisher's item, a channel marked unreachable and cleared again; an evidence request
    # claimed and its outcome recorded (ExportStore.claim/finish)
    "TimelineFunction": {"GetItem", "PutItem", "DeleteItem", "UpdateItem"},
    # claims before it moves a run (given back on a conflict), commits, nudges; the due-index
    "SweeperFunction": {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"},
    # a run created with its locks in one transaction; lock items read and a guarded run's state
    # item given a pause request (a conditional UpdateItem that leaves its version alone)
    "AlarmFunction": {"GetItem", "PutItem", "ConditionCheckItem", "UpdateItem"},
}


@pytest.mark.parametrize("function", sorted(TABLE_CALLS))
def test_each_function_may_make_the_table_calls_its_code_makes(function):
    granted = {
        action.removeprefix("dynamodb:")
        for statement in statements(function)
        for action in as_list(statement["Action"])
        if action.startswith("dynamodb:")
    }
    assert TABLE_CALLS[function] <= granted, f"{function} lacks {TABLE_CALLS[function] - granted}"


# -- SnapStart on the ingress (README "Cold starts") ----------------------------------------------


def test_snapstart_is_a_parameter_off_by_default_on_the_slack_facing_function_only():
    parameter = RAW["Parameters"]["IngressSnapStart"]
    assert parameter["Default"] == "Disabled" and parameter["AllowedValues"] == ["Enabled", "Disabled"]
    ingress = FUNCTIONS["IngressFunction"]
    assert ingress["AutoPublishAlias"] == "live", "SnapStart serves published versions, through an alias"
    condition, enabled, disabled = ingress["SnapStart"]["Fn::If"]
    assert RAW["Conditions"][condition] == {"Fn::Equals": [{"Ref": "IngressSnapStart"}, "Enabled"]}
    assert enabled == {"ApplyOn": "PublishedVersions"} and disabled == {"Ref": "AWS::NoValue"}
    assert [f for f in FUNCTIONS if "SnapStart" in FUNCTIONS[f]] == ["IngressFunction"]
    assert "register_snapstart_hooks(SANDBOX)" in (REPO / "bot" / "handlers" / "ingress.py").read_text()


def test_the_partner_alarm_bus_policy_id_fits_eventbridge_whatever_the_stack_name():
    """EventBridge takes a StatementId of at most 64 characters, [a-zA-Z0-9-_]; a stack name may
    be 128: the id is built from the stack id's UUID (36 characters), never from the name."""
    import re

    statement_id = RESOURCES["PartnerAlarmEventsPolicy"]["Properties"]["StatementId"]
    separator, (prefix, select) = statement_id["Fn::Join"]
    assert select == {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
    longest = separator.join(
        [prefix, "0" * 8 + "-" + "0" * 4 + "-" + "0" * 4 + "-" + "0" * 4 + "-" + "0" * 12]
    )
    assert len(longest) <= 64 and re.fullmatch(r"[a-zA-Z0-9_-]+", longest)


def home_record(status: str = "requested", event_name: str = "MODIFY") -> dict:
    record = stream_record(event_name, sk=keys.HOME_SK)
    image = record["dynamodb"]["NewImage"]
    image["home_status"] = {"S": status}
    image.pop("status", None)
    return record


def test_an_app_home_request_reaches_the_timeline_consumer_only():
    for event_name in ("INSERT", "MODIFY"):
        assert delivered("TimelineFunction", home_record(event_name=event_name))
        assert not delivered("WorkerFunction", home_record(event_name=event_name))


@pytest.mark.parametrize("status", ["publishing", "published", "failed"])
def test_the_home_publishers_own_writes_reach_nobody(status):
    assert not delivered("TimelineFunction", home_record(status))


def test_the_timeline_consumer_may_read_the_history_index_for_app_home():
    statements = RESOURCES["TimelineFunction"]["Properties"]["Policies"][0]["Statement"]
    assert any(
        st["Action"] == "dynamodb:Query" and "history-index" in str(st["Resource"]) for st in statements
    )
