"""End to end on real stream records: Slack command → worker → approvals → channel timeline."""

from __future__ import annotations

import json
import time

import pytest

from bot.store.model import EventKind, Status

pytestmark = pytest.mark.integration

ACME = "C0ACMEOPS"


def start(pipeline, text: str, user: str = "U0DEVONCALL", channel: str = ACME) -> str:
    response = pipeline.command(text, user_id=user, channel_id=channel)
    assert response["statusCode"] == 200, response
    answer = json.loads(response["body"])["text"]
    assert "execution `" in answer, answer
    return answer.split("execution `")[1].split("`")[0]


def approve(pipeline, execution_id: str, user: str, action: str = "approve") -> None:
    ex = pipeline.execution(execution_id)
    value = json.dumps({"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.version})
    assert pipeline.click(action, value, user_id=user)["statusCode"] == 200


def channel_thread(pipeline, execution_id: str, channel: str = ACME) -> tuple[dict, list[dict]]:
    parents = [
        m
        for m in pipeline.slack.messages(channel)
        if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == execution_id
    ]
    assert len(parents) == 1, f"expected one parent message for {execution_id}, found {len(parents)}"
    return parents[0], pipeline.slack.thread(channel, parents[0]["ts"])[1:]


def assert_timeline_in_channel_once_in_order(pipeline, execution_id: str) -> None:
    assert pipeline.drain(90)
    ex = pipeline.execution(execution_id)
    parent, replies = channel_thread(pipeline, execution_id, ex.channel)
    seqs = [r["metadata"]["event_payload"]["seq"] for r in replies]
    assert seqs == [e.seq for e in ex.timeline], "each timeline event once, in order"
    assert execution_id in parent["text"] and ex.status.value in parent["text"]


def test_throttle_runs_end_to_end_with_approvals(pipeline):
    execution_id = start(pipeline, "throttle partner-acme")
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    assert ex.approval.step_id == "mitigate"

    approve(pipeline, execution_id, "U0DEVONCALL")  # the requester: refused, nothing changes
    assert pipeline.execution(execution_id).status is Status.AWAITING_APPROVAL
    refusals = [
        c
        for c in pipeline.slack.calls
        if c.method == "chat.postEphemeral" and c.args.get("user") == "U0DEVONCALL"
    ]
    assert refusals and "you started this run" in refusals[-1].args["text"]

    approve(pipeline, execution_id, "U0STRANGER")  # not an approver: refused
    assert pipeline.execution(execution_id).status is Status.AWAITING_APPROVAL

    approve(pipeline, execution_id, "U0ACMELEAD")
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    while ex.approval is None or ex.approval.step_id != "replay":
        ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    approve(pipeline, execution_id, "U0ACMEONCALL")  # member of the approvers' user group S0ACMEONCALL
    done = pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 90)
    assert done.status is Status.SUCCEEDED, done.error
    replay = done.steps["replay"].outputs
    assert replay["applied"] + replay["skipped_duplicates"] == 300 and replay["failed"] == 0
    granted = [e for e in done.timeline if e.kind is EventKind.APPROVAL_GRANTED]
    assert [e.actor for e in granted] == ["U0ACMELEAD", "U0ACMEONCALL"]
    assert_timeline_in_channel_once_in_order(pipeline, execution_id)


def test_double_click_decides_once(pipeline):
    execution_id = start(pipeline, "replay partner-acme")
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL", "SUCCEEDED"}, 60)
    if ex.status is Status.SUCCEEDED:
        pytest.skip("the store was already replayed by an earlier test: nothing to approve")
    value = json.dumps({"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.version})
    pipeline.click("reject", value, user_id="U0ACMESRE")  # opens the reason dialog
    (dialog,) = pipeline.slack.open_views("U0ACMESRE")
    assert pipeline.submit_view(dialog["id"], {"note": "not during the sale"})["view"] == {}
    pipeline.click("approve", value, user_id="U0ACMELEAD")  # a second click on the same message
    done = pipeline.wait_for(execution_id, {"FAILED", "SUCCEEDED"}, 60)
    assert done.status is Status.FAILED and done.error["code"] == "ApprovalRejected"
    decisions = [
        e for e in done.timeline if e.kind in {EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_REJECTED}
    ]
    assert [(e.kind, e.actor) for e in decisions] == [(EventKind.APPROVAL_REJECTED, "U0ACMESRE")]
    assert "replay" not in done.steps
    assert_timeline_in_channel_once_in_order(pipeline, execution_id)


def test_failing_step_fails_the_run_with_the_error_on_the_timeline(pipeline):
    execution_id = start(pipeline, "incomplete-results partner-acme key_attribute=sk")
    done = pipeline.wait_for(execution_id, {"FAILED", "SUCCEEDED"}, 60)
    assert done.status is Status.FAILED
    assert done.error["code"] == "PreflightFailed" and "not a partition key" in done.error["message"]
    failed = [e for e in done.timeline if e.kind is EventKind.STEP_FAILED]
    assert failed and failed[0].error_code == "PreflightFailed"
    assert done.timeline[-1].kind is EventKind.RUN_FAILED
    assert_timeline_in_channel_once_in_order(pipeline, execution_id)


def test_cancel_stops_a_waiting_run_and_records_who(pipeline):
    execution_id = start(pipeline, "throttle partner-acme window=20m")
    pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    response = pipeline.command(f"cancel {execution_id}", user_id="U0DEVONCALL")
    assert "Cancelling" in json.loads(response["body"])["text"]
    done = pipeline.wait_for(execution_id, {"CANCELLED"}, 30)
    assert done.timeline[-1].kind is EventKind.RUN_CANCELLED and done.timeline[-1].actor == "U0DEVONCALL"
    assert_timeline_in_channel_once_in_order(pipeline, execution_id)
    # The approval nobody decided loses its buttons and says why.
    requested = next(e.seq for e in done.timeline if e.kind is EventKind.APPROVAL_REQUESTED)
    _, replies = channel_thread(pipeline, execution_id)
    (request,) = [r for r in replies if r["metadata"]["event_payload"]["seq"] == requested]
    assert not [b for b in request["blocks"] if b["type"] == "actions"], "no buttons on an ended run"
    assert "closed: the run was cancelled" in json.dumps(request["blocks"])


def test_status_and_timeline_commands_answer_for_a_run(pipeline):
    execution_id = start(pipeline, "consistency partner-acme sample=20")
    pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 60)
    status = json.loads(pipeline.command(f"status {execution_id}")["body"])["text"]
    timeline = json.loads(pipeline.command(f"timeline {execution_id}")["body"])["text"]
    assert execution_id in status and "SUCCEEDED" in status
    assert "run started" in timeline.lower() or "started" in timeline


def test_alarm_starts_one_run_in_the_partner_channel_even_when_it_flaps(pipeline):
    first = pipeline.fire_alarm("acme-orders-WriteThrottleEvents")
    second = pipeline.fire_alarm("acme-orders-WriteThrottleEvents")
    starts = first["starts"] + second["starts"]
    started = [s for s in starts if s["started"]]
    assert len(started) == 1 and started[0]["runbook"] == "throttle"
    assert second["starts"][0]["active_execution_id"] == started[0]["execution_id"]
    execution_id = started[0]["execution_id"]
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL", "SUCCEEDED", "FAILED"}, 60)
    assert ex.channel == ACME and ex.trigger == "alarm" and ex.requested_by.startswith("alarm:")
    pipeline.command(f"cancel {execution_id}", user_id="U0ACMELEAD")
    pipeline.wait_for(execution_id, {"CANCELLED", "SUCCEEDED", "FAILED"}, 30)
    # Once the run has ended, the next alarm may start a new one.
    third = pipeline.fire_alarm("acme-orders-WriteThrottleEvents")
    assert third["starts"][0]["started"]
    pipeline.command(f"cancel {third['starts'][0]['execution_id']}", user_id="U0ACMELEAD")


def test_flaky_slack_still_gets_every_event_once_and_in_order(pipeline):
    pipeline.slack.fault_rate = 0.2
    try:
        runs = [start(pipeline, f"consistency partner-acme sample={n}") for n in (5, 6, 7, 8)]
        for execution_id in runs:
            pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 60)
        for execution_id in runs:
            assert_timeline_in_channel_once_in_order(pipeline, execution_id)
        faults = [c for c in pipeline.slack.calls if c.status in {429, 500, 502, 503}]
        assert faults, "the stand-in injected 429/5xx answers"
    finally:
        pipeline.slack.fault_rate = 0.0


GLOBEX = "C0GLOBEXOPS"


def test_timeout_runbook_reads_latency_and_pages_the_reference_query_for_globex(pipeline):
    execution_id = start(pipeline, "timeout partner-globex", channel=GLOBEX)
    done = pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 60)
    assert done.status is Status.SUCCEEDED, done.error
    query = done.steps["reference_query"].outputs
    assert query["complete"] is True and query["pages"] >= 1 and query["items_returned"] >= 1
    assert done.params["table"] == "payments"  # globex's override, not the runbook's default
    assert_timeline_in_channel_once_in_order(pipeline, execution_id)


def test_incomplete_results_resumes_a_paginated_read_to_the_end(pipeline):
    execution_id = start(pipeline, "incomplete-results partner-acme")
    done = pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 60)
    assert done.status is Status.SUCCEEDED, done.error
    read = done.steps["full_read"].outputs
    assert read["complete"] is True and read["pages"] > 1


def test_replay_from_an_sqs_store_needs_a_globex_approver_and_applies_each_write_once(pipeline):
    execution_id = start(pipeline, "replay partner-globex", channel=GLOBEX)
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    approve(pipeline, execution_id, "U0ACMELEAD")  # acme's approver has no say over globex
    assert pipeline.execution(execution_id).status is Status.AWAITING_APPROVAL
    approve(pipeline, execution_id, "U0GLOBEXLEAD")
    done = pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 90)
    assert done.status is Status.SUCCEEDED, done.error
    replay = done.steps["replay"].outputs
    assert replay["failed"] == 0 and replay["applied"] + replay["skipped_duplicates"] >= 1
    assert ex.approval.step_id == "replay"


def test_after_a_runs_state_expires_no_item_of_that_run_remains(pipeline):
    import boto3

    from bot.store import keys

    execution_id = start(pipeline, "consistency partner-acme sample=5")
    pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 60)
    assert pipeline.drain(60)
    client = boto3.client("dynamodb")
    table = pipeline.tables["ExecutionsTable"]

    def items() -> list:
        return client.query(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.execution_pk(execution_id)}},
            ConsistentRead=True,
        )["Items"]

    assert len(items()) > 1, "a finished run keeps its state, the publisher's item and its claims"
    client.update_item(  # as if its 90 days of retention had passed
        TableName=table,
        Key={k: {"S": v} for k, v in keys.state_key(execution_id).items()},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    deadline = time.monotonic() + 30
    while items() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert items() == [], "TTL removed the state item and the worker removed the rest"
