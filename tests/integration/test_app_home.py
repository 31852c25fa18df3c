"""App Home through the local pipeline (moto only: nothing here differs on DynamoDB Local): the
Events API on the one request URL (url_verification, a signed app_home_opened, Slack's retry of
it deduplicated), the home published by the timeline consumer from the request item, an approval
decided from the home with the channel's rules, and the refresh when a run changes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.slack.home import START_ACTION
from bot.slack.start_form import PARTNER_BLOCK, PLAN_BLOCK, RUNBOOK_BLOCK

from .test_pipeline import start

pytestmark = pytest.mark.integration

APPROVER = "U0ACMELEAD"
REQUESTER = "U0DEVONCALL"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(PipelineOptions(engine="moto", sweep_interval=0.3)) as running:
        import boto3

        from bot.demo import seed_demo

        seed_demo(boto3.session.Session())
        yield running


def publishes(pipeline: LocalPipeline, user: str) -> int:
    return sum(
        1 for c in pipeline.slack.calls if c.method == "views.publish" and c.args.get("user_id") == user
    )


def home_text(pipeline: LocalPipeline, user: str) -> str:
    return json.dumps((pipeline.slack.home_of(user) or {}).get("blocks") or [])


def button_for(execution_id: str) -> str:
    """How an approval button's value for the run reads inside the home's JSON."""
    return json.dumps(f'"execution_id":"{execution_id}"')[1:-1]


def wait_for_home(pipeline: LocalPipeline, user: str, predicate, timeout: float = 30.0) -> dict:
    assert pipeline.slack.wait_for(lambda: predicate(home_text(pipeline, user)), timeout), home_text(
        pipeline, user
    )
    return pipeline.slack.home_of(user) or {}


def test_url_verification_is_answered_with_the_challenge(pipeline):
    response = pipeline.deliver_event(
        pipeline.slack.url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    )
    assert response["statusCode"] == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in response["body"]


def test_an_unsigned_event_is_refused_and_changes_nothing(pipeline):
    payload = pipeline.slack.home_opened("U0FORGER")
    assert pipeline.deliver_event(payload, secret="not-the-signing-secret")["statusCode"] == 401
    assert pipeline.drain(30)
    assert pipeline.slack.home_of("U0FORGER") is None


def test_a_waiting_approval_is_on_the_approvers_home_and_approving_there_decides(pipeline):
    execution_id = start(pipeline, "throttle partner-acme window=20m")
    pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)

    payload = pipeline.slack.home_opened(APPROVER)
    assert pipeline.deliver_event(payload)["statusCode"] == 200
    home = wait_for_home(pipeline, APPROVER, lambda text: button_for(execution_id) in text)
    assert home["type"] == "home"
    assert "Waiting for your approval (1)" in home_text(pipeline, APPROVER)
    assert pipeline.drain(30)
    before = publishes(pipeline, APPROVER)

    # Slack's retry of the same event (X-Slack-Retry-Num, same event_id) publishes nothing more.
    for retry in (1, 2):
        assert pipeline.deliver_event(payload, retry_num=retry)["statusCode"] == 200
    assert pipeline.drain(30)
    assert publishes(pipeline, APPROVER) == before

    # The requester sees their run under recent runs, with no button to decide it.
    assert pipeline.open_home(REQUESTER)["statusCode"] == 200
    wait_for_home(pipeline, REQUESTER, lambda text: execution_id in text and "Your recent runs" in text)
    assert "Waiting for your approval (0)" in home_text(pipeline, REQUESTER)
    with pytest.raises(ValueError, match="no approve button"):
        pipeline.slack.home_click(REQUESTER, "approve")

    # Approving from the approver's home: the channel's rules; the homes are refreshed.
    ex = pipeline.execution(execution_id)
    step = ex.approval.step_id
    assert pipeline.home_click(APPROVER, "approve")["statusCode"] == 200
    moved = pipeline.wait_for(execution_id, {"RUNNING", "APPROVED", "AWAITING_APPROVAL", "SUCCEEDED"}, 30)
    assert moved.approval is None or moved.approval.step_id != step or moved.approval.decision == "approved"
    stale = json.dumps(_value(ex))[1:-1]
    wait_for_home(pipeline, APPROVER, lambda text: stale not in text)

    # The run ends (cancelled): the approver's home, refreshed without being opened, lets it go.
    opened = publishes(pipeline, APPROVER)
    assert "Cancelling" in json.loads(pipeline.command(f"cancel {execution_id}")["body"])["text"]
    pipeline.wait_for(execution_id, {"CANCELLED"}, 60)
    wait_for_home(pipeline, APPROVER, lambda text: execution_id not in text)
    assert publishes(pipeline, APPROVER) > opened


def test_the_requester_clicking_approve_from_a_home_is_refused_by_dm_and_nothing_changes(pipeline):
    execution_id = start(pipeline, "throttle partner-acme window=20m")
    ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    assert pipeline.open_home(APPROVER)["statusCode"] == 200
    wait_for_home(pipeline, APPROVER, lambda text: button_for(execution_id) in text)
    # A forged click: the approver's home payload, clicked as the requester.
    payload = pipeline.slack.home_click(APPROVER, "approve")
    assert execution_id in payload["actions"][0]["value"]
    payload["user"] = {"id": REQUESTER, "username": REQUESTER.lower(), "team_id": "T0LOCAL"}
    from bot.local.slack_requests import (
        DEV_SIGNING_SECRET,
        http_api_event,
        signed_headers,
        view_submission_body,
    )

    body = view_submission_body(payload)
    assert (
        pipeline.ingress.invoke(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body)))["statusCode"]
        == 200
    )
    assert pipeline.slack.wait_for(lambda: pipeline.slack.dms(REQUESTER), 10)
    (dm,) = [m for m in pipeline.slack.dms(REQUESTER) if "you started this run" in m["text"]]
    assert "nothing" in dm["text"] or "ask one of" in dm["text"]
    assert pipeline.execution(execution_id).approval.votes == ex.approval.votes, "the refusal changed nothing"
    assert "Cancelling" in json.loads(pipeline.command(f"cancel {execution_id}")["body"])["text"]
    pipeline.wait_for(execution_id, {"CANCELLED"}, 60)


def _home_form(pipeline, user: str) -> dict:
    pipeline.open_home(user)
    wait_for_home(pipeline, user, lambda text: START_ACTION in text)
    assert pipeline.home_click(user, START_ACTION)["statusCode"] == 200
    (view,) = pipeline.slack.open_views(user)
    assert pipeline.choose(view["id"], RUNBOOK_BLOCK, "throttle")["statusCode"] == 200
    (view,) = pipeline.slack.open_views(user)
    assert pipeline.choose(view["id"], PARTNER_BLOCK, "partner-acme")["statusCode"] == 200
    (view,) = pipeline.slack.open_views(user)
    assert any(b.get("block_id") == PLAN_BLOCK for b in view["blocks"])
    return view


def test_from_the_home_only_the_partners_approvers_start_runs(pipeline):
    """A slash command proves the user is in the partner's channel (Slack lets only members type
    it); the Home proves nothing, so anyone else is sent to the channel, with nothing started."""
    before = len(pipeline.slack.calls)
    view = _home_form(pipeline, REQUESTER)
    submitted = pipeline.submit_view(view["id"], {PLAN_BLOCK: "plan"})
    errors = submitted["answer"].get("errors") or {}
    assert "only Acme Logistics's approvers start runs" in errors.get(PARTNER_BLOCK, ""), submitted
    assert "type /runbook there" in errors[PARTNER_BLOCK]
    assert not [c for c in pipeline.slack.calls[before:] if c.method == "chat.postEphemeral"]
    pipeline.slack.close_view(view["id"])


def test_the_start_button_opens_the_form_and_plan_first_starts_a_plan_in_the_partners_channel(pipeline):
    view = _home_form(pipeline, APPROVER)
    submitted = pipeline.submit_view(view["id"], {PLAN_BLOCK: "plan"})
    assert submitted["status"] == 200 and not submitted["answer"].get("errors"), submitted
    (told,) = [
        c.args
        for c in pipeline.slack.calls
        if c.method == "chat.postEphemeral" and "Planning `throttle`" in str(c.args)
    ]
    assert told["channel"] == "C0ACMEOPS" and told["user"] == APPROVER, "the partner's channel"
    plan_id = str(told["text"]).split("plan `")[1].split("`")[0]
    plan = pipeline.execution(plan_id)
    assert (plan.kind, plan.channel, plan.requested_by) == ("plan", "C0ACMEOPS", APPROVER)


def _value(ex) -> str:
    return json.dumps(
        {"execution_id": ex.execution_id, "step_id": ex.approval.step_id, "version": ex.version},
        separators=(",", ":"),
    )
