"""Clicks are answered inside Slack's 3 seconds whatever Slack's Web API does, never with a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.store.model import Status

pytestmark = pytest.mark.integration

ACME = "C0ACMEOPS"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    import boto3

    from bot.demo import seed_demo

    with LocalPipeline(PipelineOptions(engine="moto", sweep_interval=0.3)) as running:
        seed_demo(boto3.session.Session())
        yield running


def waiting_run(pipeline: LocalPipeline) -> str:
    response = pipeline.command("throttle partner-acme", user_id="U0DEVONCALL", channel_id=ACME)
    execution_id = json.loads(response["body"])["text"].split("execution `")[1].split("`")[0]
    pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    assert pipeline.drain(60)
    return execution_id


def click(pipeline: LocalPipeline, execution_id: str, user: str) -> tuple[dict, float]:
    ex = pipeline.execution(execution_id)
    value = json.dumps({"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.version})
    started = time.monotonic()
    response = pipeline.click("approve", value, user_id=user, channel_id=ACME)
    return response, time.monotonic() - started


def test_a_group_approvers_click_under_slack_429s_is_answered_in_time_and_can_be_repeated(pipeline):
    execution_id = waiting_run(pipeline)
    pipeline.slack.fail("*", status=429, retry_after=2, times=None)  # every Web API call: 429, wait 2 s
    try:
        response, seconds = click(pipeline, execution_id, "U0ACMEONCALL")  # a member of S0ACMEONCALL
    finally:
        pipeline.slack.clear_faults()
    assert response["statusCode"] == 200 and seconds < 3.0, (response, seconds)
    assert pipeline.execution(execution_id).status is Status.AWAITING_APPROVAL, (
        "unknown membership: nothing changed"
    )
    time.sleep(1.5)  # the time-boxed lookup carries on in the background and fills the cache
    response, seconds = click(pipeline, execution_id, "U0ACMEONCALL")
    assert response["statusCode"] == 200 and seconds < 3.0
    assert pipeline.execution(execution_id).status in {
        Status.APPROVED,
        Status.RUNNING,
        Status.AWAITING_APPROVAL,
    }
    granted = [e for e in pipeline.execution(execution_id).timeline if e.kind.value == "approval_granted"]
    assert [e.actor for e in granted] == ["U0ACMEONCALL"]
    pipeline.command(f"cancel {execution_id}", user_id="U0ACMELEAD")
    pipeline.wait_for(execution_id, {"CANCELLED", "SUCCEEDED", "FAILED"}, 60)  # frees the table lock


def test_a_refused_click_under_slack_429s_is_answered_in_time(pipeline):
    execution_id = waiting_run(pipeline)
    pipeline.slack.fail("*", status=429, retry_after=2, times=None)
    try:
        response, seconds = click(pipeline, execution_id, "U0DEVONCALL")  # the requester: refused
    finally:
        pipeline.slack.clear_faults()
    assert response["statusCode"] == 200 and seconds < 3.0, (response, seconds)
    assert pipeline.execution(execution_id).status is Status.AWAITING_APPROVAL
    pipeline.command(f"cancel {execution_id}", user_id="U0ACMELEAD")
    pipeline.wait_for(execution_id, {"CANCELLED", "SUCCEEDED", "FAILED"}, 60)  # frees the table lock
