"""The sample events in events/: each is what its function in template.yaml receives, and each
function handles it. Every file in events/ is checked, so a new sample is covered when it lands."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from bot.handlers import alarm, ingress, sweeper, timeline, worker
from bot.handlers.records import state_image
from bot.local import filters
from bot.local.lambda_context import LambdaContext
from bot.local.slack_api import SlackStandIn
from bot.local.slack_requests import DEV_BOT_TOKEN
from bot.local.template import load_template
from bot.slack.approvals import parse_button_value
from bot.slack.render import DECISION_DIALOG
from bot.store import keys
from bot.store.codec import from_item, to_item
from bot.store.executions import ExecutionStore
from bot.store.model import EventKind, Execution, Status
from bot.store.slack_posts import PostsStore
from tests.events import EVENTS_DIR, body_of, event_names, is_slack_request, load_event

EVENTS = event_names()
SLACK_REQUESTS = [name for name in EVENTS if is_slack_request(load_event(name))]
SLASH_COMMANDS = ["slash-command", "slash-command-base64"]
BUTTONS = ["button-approve", "button-approve-base64"]
STREAMS = [name for name in EVENTS if "Records" in load_event(name)]

# Slack's documented slash-command fields ("Implementing slash commands").
SLASH_FIELDS = {
    "token",
    "team_id",
    "team_domain",
    "channel_id",
    "channel_name",
    "user_id",
    "user_name",
    "command",
    "text",
    "api_app_id",
    "response_url",
    "trigger_id",
}
# The block_actions interaction payload ("Reference: block_actions payloads").
BLOCK_ACTIONS_FIELDS = {
    "type",
    "user",
    "api_app_id",
    "token",
    "container",
    "trigger_id",
    "team",
    "channel",
    "message",
    "response_url",
    "actions",
}
# The view_submission interaction payload ("Reference: view_submission payloads").
VIEW_SUBMISSION_FIELDS = {"type", "team", "user", "api_app_id", "token", "trigger_id", "view"}
VIEW_FIELDS = {"id", "type", "callback_id", "private_metadata", "state", "hash", "title", "blocks"}
RECORD_FIELDS = {
    "eventID",
    "eventName",
    "eventVersion",
    "eventSource",
    "awsRegion",
    "dynamodb",
    "eventSourceARN",
}
ACME_CHANNEL = "C0ACMEOPS"


# -- which function a sample is for, by its shape and the template ---------------------------------


def function_events(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(logical id, event properties) of every function event of `kind` in template.yaml."""
    for logical_id, props in load_template().functions().items():
        for event in (props.get("Events") or {}).values():
            if event.get("Type") == kind:
                yield logical_id, event.get("Properties") or {}


def functions_for(event: dict[str, Any]) -> set[str]:
    """The template functions that would be invoked with `event`."""
    if event.get("version") == "2.0" and "routeKey" in event:
        return {
            lid
            for lid, p in function_events("HttpApi")
            if f"{p['Method'].upper()} {p['Path']}" == event["routeKey"]
            and str(p.get("PayloadFormatVersion")) == "2.0"
        }
    if "Records" in event:
        return {
            consumer.logical_id
            for consumer in load_template().stream_consumers()
            if all(filters.matches_any(consumer.filter_patterns, r) for r in event["Records"])
        }
    if event.get("detail-type") == "Scheduled Event":
        return {f.logical_id for f in load_template().scheduled_functions()}
    return {
        lid
        for kind in ("EventBridgeRule", "CloudWatchEvent")
        for lid, p in function_events(kind)
        if filters.matches(p["Pattern"], event)
    }


def handler_of(handler: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A template `Handler` (`module.function`), imported as Lambda does."""
    module, _, function = handler.rpartition(".")
    resolved: Callable[[dict[str, Any], Any], dict[str, Any]] = getattr(
        importlib.import_module(module), function
    )
    return resolved


def form(event: dict[str, Any]) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(body_of(event), keep_blank_values=True))


def interaction(event: dict[str, Any]) -> dict[str, Any]:
    return json.loads(form(event)["payload"])


def assert_http_api_request(event: dict[str, Any]) -> None:
    (route,) = [p for _, p in function_events("HttpApi")]
    assert event["rawPath"] == route["Path"] and event["rawQueryString"] == ""
    assert event["requestContext"]["http"]["method"] == route["Method"].upper() == "POST"
    assert event["requestContext"]["http"]["path"] == route["Path"]
    assert event["requestContext"]["routeKey"] == event["routeKey"]
    assert isinstance(event["isBase64Encoded"], bool)
    headers = event["headers"]
    assert all(name == name.lower() for name in headers), "HTTP API hands Lambda lower-case header names"
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert int(headers["content-length"]) == len(body_of(event).encode())
    assert headers["x-slack-request-timestamp"].isdigit()
    assert re.fullmatch(r"v0=[0-9a-f]{64}", headers["x-slack-signature"])
    fields = form(event)
    if "payload" in fields and interaction(event)["type"] == "view_submission":
        payload = interaction(event)
        assert payload.keys() >= VIEW_SUBMISSION_FIELDS and payload["view"].keys() >= VIEW_FIELDS
        assert payload["view"]["type"] == "modal" and payload["view"]["callback_id"] == DECISION_DIALOG
        assert set(payload["view"]["state"]["values"]) == {b["block_id"] for b in payload["view"]["blocks"]}
    elif "payload" in fields:
        payload = interaction(event)
        assert payload.keys() >= BLOCK_ACTIONS_FIELDS and payload["type"] == "block_actions"
        assert {"id", "username", "team_id"} <= payload["user"].keys()
        assert payload["actions"], "a click carries the action clicked"
        for action in payload["actions"]:
            assert {"action_id", "block_id", "value", "type", "action_ts"} <= action.keys()
            assert action["type"] == "button" and action["action_id"] in {
                "approve",
                "approve_comment",
                "reject",
            }
            parse_button_value(action["value"])  # what the bot's approval buttons carry
    else:
        assert fields.keys() >= SLASH_FIELDS and fields["command"] == "/runbook"


def assert_stream_records(event: dict[str, Any]) -> None:
    assert event["Records"]
    for record in event["Records"]:
        assert record.keys() >= RECORD_FIELDS
        assert record["eventVersion"] == "1.1" and record["eventSource"] == "aws:dynamodb"
        assert re.fullmatch(
            r"arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/[^/]+/stream/.+", record["eventSourceARN"]
        )
        ddb = record["dynamodb"]
        assert ddb["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert ddb["SequenceNumber"].isdigit() and isinstance(ddb["SizeBytes"], int)
        assert isinstance(ddb["ApproximateCreationDateTime"], int | float)
        assert ddb["Keys"] == {k: ddb["NewImage"][k] for k in (keys.PK, keys.SK)}
        assert ("OldImage" in ddb) == (record["eventName"] == "MODIFY")
        ex = state_image(record)
        assert ex is not None and ddb["Keys"][keys.PK]["S"] == keys.execution_pk(ex.execution_id)
        if "OldImage" in ddb:
            assert from_item(ddb["OldImage"]).version == ex.version - 1


# -- the environment every handler sees ----------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    table: str
    secret: str
    slack: SlackStandIn

    def store(self) -> ExecutionStore:
        return ExecutionStore(client=boto3.client("dynamodb"), table=self.table)

    def state_items(self) -> list[dict[str, Any]]:
        items = boto3.client("dynamodb").scan(TableName=self.table)["Items"]
        return [i for i in items if i[keys.SK]["S"] == keys.STATE_SK]

    def put(self, image: dict[str, Any], **changes: Any) -> Execution:
        """The state item a stream record's image shows, written to the table (with `changes`).

        The sample was recorded once; its run started a minute before the test runs, whenever that
        is, so the partner's SLA clock (120 minutes) never runs out under a later test run."""
        changes.setdefault("created_at_ms", int(time.time() * 1000) - 60_000)
        ex = dataclasses.replace(from_item(image), **changes)
        boto3.client("dynamodb").put_item(TableName=self.table, Item=to_item(ex))
        return ex

    def execution(self, execution_id: str) -> Execution:
        ex = self.store().get(execution_id)
        assert ex is not None, f"no state item for {execution_id}"
        return ex


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn(DEV_BOT_TOKEN, usergroups={"S0ACMEONCALL": ["U0ACMEONCALL"]})
    stand_in.start()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def env(server_table: str, slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    from bot.local.pipeline import fresh_sandboxes

    secret = "test-signing-" + secrets.token_hex(16)  # not the secret the files were signed with
    monkeypatch.setenv("SLACK_SIGNING_SECRET", secret)
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEV_BOT_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.base_url)
    fresh_sandboxes()
    yield Env(server_table, secret, slack)
    fresh_sandboxes()


def record_image(name: str) -> dict[str, Any]:
    (record,) = load_event(name)["Records"]
    image: dict[str, Any] = record["dynamodb"]["NewImage"]
    return image


def clicked(name: str) -> dict[str, Any]:
    (action,) = interaction(load_event(name))["actions"]
    return action


def answer_text(response: dict[str, Any]) -> str:
    return str(json.loads(response["body"])["text"])


# -- the files -----------------------------------------------------------------------------------------


def test_every_function_in_the_template_has_a_sample_event():
    covered = set().union(*(functions_for(load_event(name)) for name in EVENTS))
    assert covered == set(load_template().functions())


@pytest.mark.parametrize("name", EVENTS)
def test_every_sample_event_is_json_in_the_shape_its_function_expects(name):
    event = json.loads((EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    functions = functions_for(event)
    assert functions, f"events/{name}.json matches no function's event source in template.yaml"
    if "routeKey" in event:
        assert_http_api_request(event)
    elif "Records" in event:
        assert_stream_records(event)
    else:  # EventBridge: a schedule or a rule's match
        assert {
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail",
        } <= (event.keys())
        if event["source"] == "aws.cloudwatch":
            assert event["detail"]["alarmName"] and event["resources"][0].endswith(
                f":alarm:{event['detail']['alarmName']}"
            )


@pytest.mark.parametrize("name", EVENTS)
def test_every_sample_event_is_listed_in_the_events_readme_with_its_function(name):
    readme = (EVENTS_DIR / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if f"`{name}.json`" in line]
    assert lines, f"events/README.md has no line for {name}.json"
    for logical_id in functions_for(load_event(name)):
        assert any(logical_id in line for line in lines), f"{name}.json's line should name {logical_id}"


def test_the_samples_follow_one_run_from_the_command_to_its_approval():
    """slash-command starts the run that stream-insert shows written, stream-modify shows waiting
    for approval, and the button sample approves: `sam local invoke` them in that order."""
    command = form(load_event("slash-command"))
    inserted = from_item(record_image("stream-insert"))
    waiting = from_item(record_image("stream-modify"))
    button = parse_button_value(clicked("button-approve")["value"])
    assert inserted.execution_id == waiting.execution_id == button.execution_id
    assert inserted.requested_by == command["user_id"] and inserted.channel == command["channel_id"]
    assert (inserted.runbook, inserted.partner) == tuple(command["text"].split())
    assert inserted.status is Status.PENDING and inserted.version == 0
    assert waiting.status is Status.AWAITING_APPROVAL and waiting.approval is not None
    assert (button.step_id, button.version) == (waiting.approval.step_id, waiting.version)
    for name in BUTTONS:
        payload = interaction(load_event(name))
        assert payload["user"]["id"] != waiting.requested_by
        assert payload["channel"]["id"] == waiting.channel


# -- the ingress: slash commands and clicks ------------------------------------------------------


@pytest.mark.parametrize("name", SLACK_REQUESTS)
def test_every_slack_request_sample_is_refused_until_signed_for_now(env, name):
    as_stored = load_event(name)
    assert ingress.handler(as_stored, None)["statusCode"] == 401
    assert env.state_items() == []
    resigned = load_event(name, secret=env.secret)
    assert body_of(resigned) == body_of(as_stored)
    assert ingress.handler(resigned, None)["statusCode"] == 200


@pytest.mark.parametrize("name", SLASH_COMMANDS)
def test_slash_command_samples_start_one_pending_run(env, name):
    response = ingress.handler(load_event(name, secret=env.secret), None)
    assert response["statusCode"] == 200
    text = answer_text(response)
    execution_id = text.split("execution `")[1].split("`")[0]
    (item,) = env.state_items()
    ex = from_item(item)
    assert ex.execution_id == execution_id == from_item(record_image("stream-insert")).execution_id
    assert ex.status is Status.PENDING and ex.version == 0
    assert (ex.runbook, ex.partner, ex.requested_by, ex.channel) == (
        "throttle",
        "partner-acme",
        "U0DEVONCALL",
        ACME_CHANNEL,
    )


@pytest.mark.parametrize("name", BUTTONS)
def test_button_samples_approve_the_run_waiting_at_their_version(env, name):
    now_ms = int(time.time() * 1000)
    waiting = from_item(record_image("stream-modify"))
    assert waiting.approval is not None
    open_approval = dataclasses.replace(
        waiting.approval, requested_at_ms=now_ms, expires_at_ms=now_ms + 1_800_000
    )
    env.put(record_image("stream-modify"), approval=open_approval, due_at_ms=now_ms + 1_800_000)

    response = ingress.handler(load_event(name, secret=env.secret), None)

    assert response["statusCode"] == 200
    approver = interaction(load_event(name))["user"]["id"]
    ex = env.execution(waiting.execution_id)
    assert ex.status is Status.APPROVED and ex.version == waiting.version + 1
    assert ex.approval is not None
    assert (ex.approval.decision, ex.approval.decided_by) == ("approved", approver)
    assert ex.approved_steps == ("mitigate",)
    last = ex.timeline[-1]
    assert (last.kind, last.actor, last.step_id) == (EventKind.APPROVAL_GRANTED, approver, "mitigate")


def test_the_dialog_sample_rejects_the_run_waiting_at_its_version_with_its_reason(env):
    now_ms = int(time.time() * 1000)
    waiting = from_item(record_image("stream-modify"))
    assert waiting.approval is not None
    open_approval = dataclasses.replace(
        waiting.approval, requested_at_ms=now_ms, expires_at_ms=now_ms + 1_800_000
    )
    env.put(record_image("stream-modify"), approval=open_approval, due_at_ms=now_ms + 1_800_000)
    submitted = interaction(load_event("dialog-reject"))
    metadata = json.loads(submitted["view"]["private_metadata"])
    assert (metadata["execution_id"], metadata["step_id"], metadata["version"]) == (
        waiting.execution_id,
        waiting.approval.step_id,
        waiting.version,
    )

    response = ingress.handler(load_event("dialog-reject", secret=env.secret), None)

    assert response["statusCode"] == 200 and not (response["body"] or "").strip(), "closes the dialog"
    ex = env.execution(waiting.execution_id)
    reason = submitted["view"]["state"]["values"]["note"]["note"]["value"]
    rejected = [e for e in ex.timeline if e.kind is EventKind.APPROVAL_REJECTED]
    assert [(e.actor, e.summary) for e in rejected] == [(submitted["user"]["id"], f"rejected: {reason}")]
    assert ex.error["reason"] == reason and ex.error["by"] == submitted["user"]["id"]


def test_a_click_after_the_approval_expired_is_refused_before_the_sweeper_ends_the_run(env):
    past_ms = int(time.time() * 1000) - 60_000
    waiting = from_item(record_image("stream-modify"))
    assert waiting.approval is not None
    expired = dataclasses.replace(waiting.approval, expires_at_ms=past_ms)
    env.put(record_image("stream-modify"), approval=expired, due_at_ms=past_ms)

    response = ingress.handler(load_event("button-approve", secret=env.secret), None)

    assert response["statusCode"] == 200
    ex = env.execution(waiting.execution_id)
    assert ex.status is Status.AWAITING_APPROVAL and ex.version == waiting.version
    told = [c for c in env.slack.calls if c.method == "chat.postEphemeral"]
    assert told and "this approval expired" in told[-1].args["text"]


def test_button_sample_for_a_run_that_is_not_there_is_acked_and_changes_nothing(env):
    response = ingress.handler(load_event("button-approve", secret=env.secret), None)
    assert response["statusCode"] == 200
    assert env.state_items() == []
    told = [c for c in env.slack.calls if c.method == "chat.postEphemeral"]
    assert [c.args["user"] for c in told] == ["U0ACMELEAD"]
    assert "does not exist; nothing changed" in told[0].args["text"]


# -- the stream consumers ------------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_stream_samples_are_taken_by_their_consumers_without_failed_records(env, name):
    event = load_event(name)
    consumers = {c.logical_id: c for c in load_template().stream_consumers()}
    for logical_id in sorted(functions_for(event)):
        for record in event["Records"]:  # the table holds what each record shows
            env.put(record["dynamodb"]["NewImage"])
        consumer = consumers[logical_id]
        handler = handler_of(consumer.handler)
        response = handler(event, LambdaContext(logical_id, timeout_seconds=consumer.timeout_seconds))
        assert response == {"batchItemFailures": []}, logical_id


def test_worker_runs_the_first_step_of_the_inserted_run(env):
    inserted = env.put(record_image("stream-insert"))
    response = worker.handler(load_event("stream-insert"), LambdaContext("WorkerFunction", 120))
    assert response == {"batchItemFailures": []}
    ex = env.execution(inserted.execution_id)
    assert ex.version == 1 and ex.status is not Status.PENDING
    assert ex.timeline[0].kind is EventKind.RUN_STARTED and ex.timeline[0].actor == "U0DEVONCALL"
    assert "preflight" in ex.steps


def test_worker_leaves_a_run_waiting_for_approval_as_it_is(env):
    waiting = env.put(record_image("stream-modify"))
    response = worker.handler(load_event("stream-modify"), LambdaContext("WorkerFunction", 120))
    assert response == {"batchItemFailures": []}
    assert env.execution(waiting.execution_id) == waiting


def test_timeline_posts_the_inserted_run_as_one_parent_message(env):
    inserted = env.put(record_image("stream-insert"))
    timeline.handler(load_event("stream-insert"), LambdaContext("TimelineFunction", 60))
    (parent,) = env.slack.messages(ACME_CHANNEL)
    assert inserted.execution_id in parent["text"] and "PENDING" in parent["text"]
    assert env.slack.thread(ACME_CHANNEL, parent["ts"]) == [parent]


def test_timeline_posts_the_waiting_run_with_the_buttons_the_button_samples_click(env):
    waiting = env.put(record_image("stream-modify"))
    posts = PostsStore(boto3.client("dynamodb"), env.table)
    for _ in range(10):  # a turn is at most three posts; the sweeper's nudge brings the record again
        timeline.handler(load_event("stream-modify"), LambdaContext("TimelineFunction", 60))
        turn_ms = posts.get(waiting.execution_id).paced_until_ms
        if not turn_ms:
            break
        time.sleep(max(0.0, turn_ms / 1000 - time.time()))
    (parent,) = env.slack.messages(ACME_CHANNEL)
    assert waiting.execution_id in parent["text"] and "AWAITING_APPROVAL" in parent["text"]
    replies = env.slack.thread(ACME_CHANNEL, parent["ts"])[1:]
    assert [r["metadata"]["event_payload"]["seq"] for r in replies] == [e.seq for e in waiting.timeline]
    (actions,) = [b for b in replies[-1]["blocks"] if b["type"] == "actions"]
    buttons = {e["action_id"]: e for e in actions["elements"]}
    assert set(buttons) == {"approve", "approve_comment", "reject"}
    for name in BUTTONS:
        click = clicked(name)
        assert click["block_id"] == actions["block_id"]
        assert click["value"] == buttons[click["action_id"]]["value"]


# -- the sweeper and the alarm -------------------------------------------------------------------


def test_schedule_sample_runs_the_sweeper_which_expires_an_overdue_approval(env):
    event = load_event("schedule")
    assert "SweeperFunction" in functions_for(event)
    past_ms = int(time.time() * 1000) - 60_000
    waiting = from_item(record_image("stream-modify"))
    assert waiting.approval is not None
    overdue = dataclasses.replace(waiting.approval, expires_at_ms=past_ms)
    env.put(record_image("stream-modify"), approval=overdue, due_at_ms=past_ms)

    from bot import metrics

    with metrics.collected() as documents:
        report = sweeper.handler(event, LambdaContext("SweeperFunction", 60))

    assert report["examined"] == 1 and report["moved"] == {"expiry": 1}
    ex = env.execution(waiting.execution_id)
    assert ex.status is Status.TIMED_OUT and ex.approval is not None and ex.approval.decision == "expired"
    assert ex.error["code"] == "ApprovalExpired"
    recorded = json.dumps(documents)
    assert '"decision": "expired"' in recorded and '"status": "TIMED_OUT"' in recorded, recorded[:500]


@pytest.mark.parametrize(
    ("every", "timeout", "nudging"), [("60", 60, 55.0), ("60", 30, 25.0), ("1", 60, 0.9)]
)
def test_the_sweeper_nudges_turns_until_shortly_before_its_next_run(
    env, monkeypatch, every, timeout, nudging
):
    monkeypatch.setenv("SWEEP_EVERY_SECONDS", every)
    asked: list[float] = []
    monkeypatch.setattr(
        sweeper, "nudge_turns", lambda store, until_ms, clock: asked.append(until_ms / 1000 - clock()) or 0
    )
    report = sweeper.handler(load_event("schedule"), LambdaContext("SweeperFunction", timeout))
    assert report["turns_nudged"] == 0
    (left,) = asked
    assert nudging - 1 < left <= nudging, "within its time, and not into the next scheduled sweep"


def test_alarm_sample_starts_the_mapped_throttle_run_for_partner_acme_once(env):
    event = load_event("alarm")
    assert "AlarmFunction" in functions_for(event)
    alarm_name = event["detail"]["alarmName"]

    first = alarm.handler(event, LambdaContext("AlarmFunction", 30))
    again = alarm.handler(event, LambdaContext("AlarmFunction", 30))  # redelivered, or the alarm flapped

    (start,) = first["starts"]
    assert (start["partner"], start["runbook"], start["started"]) == ("partner-acme", "throttle", True)
    (repeat,) = again["starts"]
    assert repeat["started"] is False and repeat["active_execution_id"] == start["execution_id"]
    (item,) = env.state_items()
    ex = from_item(item)
    assert ex.execution_id == start["execution_id"] and ex.status is Status.PENDING
    assert (ex.trigger, ex.requested_by, ex.channel) == ("alarm", f"alarm:{alarm_name}", ACME_CHANNEL)
    assert ex.params["table"] == "orders"
