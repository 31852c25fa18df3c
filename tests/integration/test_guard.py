"""Guard alarms through the local pipeline: a replay that a CloudWatch alarm entering ALARM pauses
mid-run (after a page, cursor kept), resumed by an approver with the buttons, finishes with every
missed write applied once; an abort fails the run and runs its on_failure steps."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from bot.local.pipeline import LocalPipeline
from bot.store.executions import ExecutionStore
from bot.store.model import EventKind, Status
from tests.alarms import latency_alarm
from tests.integration.test_quorum import approval_messages, button, ephemerals

pytestmark = pytest.mark.integration

ACME = "C0ACMEOPS"
MISSED = 500  # 20 pages of 25: the alarm fires while the replay is still paging
ALARM = "acme-orders-latency"


@pytest.fixture(scope="module")
def guarded(acme_pipeline) -> LocalPipeline:
    """partner-acme guarding its risky steps with its latency and error alarms (each test seeds)."""
    return acme_pipeline("guard_alarms: [acme-orders-*, acme-*-errors]", seed=False)


def seed() -> None:
    from bot.demo import seed_demo

    session = boto3.session.Session()
    seed_demo(session, missed=MISSED)
    cloudwatch = session.client("cloudwatch")
    latency_alarm(cloudwatch, ALARM)


def set_alarm(state: str, reason: str) -> None:
    boto3.client("cloudwatch").set_alarm_state(AlarmName=ALARM, StateValue=state, StateReason=reason)


def start_replay(pipeline: LocalPipeline) -> str:
    response = pipeline.command("replay partner-acme", user_id="U0DEVONCALL", channel_id=ACME)
    answer = json.loads(response["body"])["text"]
    assert "execution `" in answer, answer
    return answer.split("execution `")[1].split("`")[0]


def approve_replay(pipeline: LocalPipeline, execution_id: str) -> None:
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL", "FAILED", "SUCCEEDED"}, 60)
    assert ex.status is Status.AWAITING_APPROVAL and ex.approval.step_id == "replay", ex.error
    assert (
        pipeline.click("approve", button(pipeline, execution_id), user_id="U0ACMELEAD")["statusCode"] == 200
    )


def fire_mid_run(pipeline: LocalPipeline, execution_id: str) -> dict:
    """Set the alarm to ALARM once the replay has finished a page, and wait for the pause."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = ExecutionStore().progress(execution_id, "replay")
        if progress and progress.get("cursor"):
            set_alarm("ALARM", "Threshold Crossed: 1 datapoint [412.0] > 250.0")
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the replay never finished a page")
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL", "FAILED", "SUCCEEDED"}, 60)
    assert ex.status is Status.AWAITING_APPROVAL, (
        f"the replay ended {ex.status.value} before the guard paused it"
    )
    assert ex.approval.kind == "guard" and ex.approval.step_id == "replay"
    return dict(ex.checkpoint or {})


def test_an_alarm_mid_replay_pauses_it_and_an_approver_resumes_it_with_nothing_written_twice(guarded):
    seed()
    execution_id = start_replay(guarded)
    approve_replay(guarded, execution_id)
    checkpoint = fire_mid_run(guarded, execution_id)
    done_at_pause = checkpoint["applied"] + checkpoint["skipped"] + checkpoint["failed"]
    assert 0 < done_at_pause < MISSED and checkpoint["cursor"], "paused mid-run, its cursor kept"

    ex = guarded.execution(execution_id)
    assert f"guard alarm {ALARM} is in ALARM: Threshold Crossed" in ex.approval.effect
    assert guarded.drain(60)
    (paused_message,) = [
        m for m in approval_messages(guarded, execution_id) if "Paused by a guard alarm" in m.get("text", "")
    ]
    buttons = next(b for b in paused_message["blocks"] if b["type"] == "actions")["elements"]
    assert [b["text"]["text"] for b in buttons] == ["Resume", "Resume with comment", "Abort"]
    # Stays paused: the worker does nothing more while it waits.
    time.sleep(0.5)
    assert guarded.execution(execution_id).checkpoint == ex.checkpoint

    # The requester is not an approver; an approver resumes (the alarm still in ALARM is accepted).
    value = button(guarded, execution_id)
    assert guarded.click("approve", value, user_id="U0DEVONCALL")["statusCode"] == 200
    assert guarded.execution(execution_id).status is Status.AWAITING_APPROVAL
    assert ephemerals(guarded, "U0DEVONCALL"), "the requester is told why not"
    assert guarded.click("approve", value, user_id="U0ACMESRE")["statusCode"] == 200
    ended = guarded.wait_for(execution_id, {"SUCCEEDED", "FAILED", "TIMED_OUT"}, 120)
    assert ended.status is Status.SUCCEEDED, ended.error
    outputs = ExecutionStore().outputs(execution_id, ended.steps["replay"])
    # Each missed write once: one in five had landed anyway (the demo's seed), none twice.
    assert outputs["failed"] == 0
    assert outputs["applied"] == MISSED * 4 // 5 and outputs["skipped_duplicates"] == MISSED // 5
    resumed = [e for e in ended.timeline if e.kind is EventKind.APPROVAL_GRANTED and e.step_id == "replay"]
    assert [e.summary for e in resumed] == ["approved", "resumed"]
    assert resumed[-1].actor == "U0ACMESRE"
    set_alarm("OK", "recovered")


def test_an_abort_fails_the_paused_run(guarded):
    seed()
    set_alarm("ALARM", "error rate above 1%")  # already hurting: the replay pauses before its first page
    execution_id = start_replay(guarded)
    approve_replay(guarded, execution_id)
    ex = guarded.wait_for(execution_id, {"AWAITING_APPROVAL", "FAILED", "SUCCEEDED"}, 60)
    while ex.status is Status.AWAITING_APPROVAL and ex.approval.kind != "guard":
        time.sleep(0.05)
        ex = guarded.execution(execution_id)
    assert ex.approval.kind == "guard", ex.status
    assert ex.checkpoint["applied"] == 0, "nothing written before the first guard check"
    value = button(guarded, execution_id)
    assert guarded.click("reject", value, user_id="U0ACMELEAD")["statusCode"] == 200
    (dialog,) = guarded.slack.open_views("U0ACMELEAD")
    assert dialog["title"]["text"] == "Abort this step" and dialog["submit"]["text"] == "Abort"
    assert guarded.submit_view(dialog["id"], {"note": "partner still paging"})["view"] == {}
    ended = guarded.wait_for(execution_id, {"FAILED", "SUCCEEDED", "TIMED_OUT"}, 60)
    assert ended.status is Status.FAILED
    assert ended.error["code"] == "GuardAborted" and ended.error["reason"] == "partner still paging"
    assert ended.steps.get("replay") is None or ended.steps["replay"].outcome != "succeeded"
    set_alarm("OK", "recovered")


def test_the_alarm_functions_request_pauses_a_running_replay_and_a_resume_finishes_it(guarded):
    """The alarm's event reaches the alarm function before any DescribeAlarms would see it (here
    the alarm stays OK in CloudWatch): its pause request on the state item is obeyed."""
    seed()
    execution_id = start_replay(guarded)
    approve_replay(guarded, execution_id)
    deadline = time.monotonic() + 60
    while not (ExecutionStore().progress(execution_id, "replay") or {}).get("cursor"):
        assert time.monotonic() < deadline, "the replay never finished a page"
        time.sleep(0.01)
    version = guarded.execution(execution_id).version
    answer = guarded.fire_alarm("acme-orders-errors")  # matches the partner's acme-orders-*
    (pause,) = answer["pauses"]
    assert pause["execution_id"] == execution_id and pause["requested"] is True
    assert guarded.execution(execution_id).version - version <= 1, "the request moves no version itself"
    ex = guarded.wait_for(execution_id, {"AWAITING_APPROVAL", "FAILED", "SUCCEEDED"}, 60)
    assert ex.status is Status.AWAITING_APPROVAL and ex.approval.kind == "guard", ex.status
    assert "guard alarm acme-orders-errors entered ALARM" in ex.approval.effect
    assert ex.pause_request is None, "obeyed once, then cleared"
    assert guarded.click("approve", button(guarded, execution_id), user_id="U0ACMELEAD")["statusCode"] == 200
    ended = guarded.wait_for(execution_id, {"SUCCEEDED", "FAILED", "TIMED_OUT"}, 120)
    assert ended.status is Status.SUCCEEDED, ended.error
    outputs = ExecutionStore().outputs(execution_id, ended.steps["replay"])
    assert outputs["failed"] == 0
    # Each missed write once (the first test of this module applied them already: all in place).
    assert outputs["applied"] + outputs["skipped_duplicates"] == MISSED
