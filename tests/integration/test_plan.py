"""`/runbook plan` end to end: one message with every step's mark, a Run this plan button that
starts the real run with the same parameters, the channel rules, and no write to a partner."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from bot.catalog import load_catalog
from bot.local.pipeline import LocalPipeline
from bot.store.model import EventKind, Status
from tests.integration.test_drill_isolation import production

# moto only: DynamoDB Local adds nothing a plan's reads need that test_pipeline's runs on it do
# not already cover, and its own pipeline costs CI a minute and a half.
pytestmark = [pytest.mark.integration, pytest.mark.parametrize("pipeline", ["moto"], indirect=True)]

CATALOG = load_catalog()
ACME = "C0ACMEOPS"
PLANNER = "U0DEVONCALL"


def plan(pipeline: LocalPipeline, text: str, channel: str = ACME, user: str = PLANNER) -> str:
    response = pipeline.command(f"plan {text}", user_id=user, channel_id=channel)
    assert response["statusCode"] == 200, response
    answer = json.loads(response["body"])["text"]
    assert answer.startswith("[PLAN] Planning"), answer
    return answer.split("plan `")[1].split("`")[0]


def plan_messages(pipeline: LocalPipeline, execution_id: str, channel: str) -> list[dict[str, Any]]:
    return [
        m
        for m in pipeline.slack.messages(channel)
        if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == execution_id
    ]


def run_plan_value(message: dict[str, Any]) -> str:
    buttons = [
        e
        for b in message.get("blocks") or []
        if b.get("type") == "actions"
        for e in b.get("elements") or []
        if e.get("action_id") == "run_plan"
    ]
    assert len(buttons) == 1, "the plan has one Run this plan button"
    assert buttons[0]["text"]["text"] == "Run this plan"
    return str(buttons[0]["value"])


def test_a_plan_of_throttle_posts_one_message_with_every_mark_and_a_run_button(pipeline):
    before = production(boto3.session.Session())
    plan_id = plan(pipeline, "throttle partner-acme")
    ex = pipeline.wait_for(plan_id, {"SUCCEEDED", "FAILED", "TIMED_OUT"}, 60)
    assert ex.status is Status.SUCCEEDED and ex.kind == "plan"
    assert pipeline.drain(60)
    assert production(boto3.session.Session()) == before, "a plan changes nothing"

    messages = plan_messages(pipeline, plan_id, ACME)
    assert len(messages) == 1, "a plan is one message"
    message = messages[0]
    assert pipeline.slack.thread(ACME, message["ts"])[1:] == [], "and no thread"
    assert message["text"].startswith("[PLAN]")
    body = json.dumps(message["blocks"])
    # The demo's orders table is throttled: detect reads it for real, mitigate and replay need
    # approval with their exact effects, verify passes on the replay's predicted outputs.
    assert "would run" in body and "needs approval" in body
    marks = {e.step_id: e.figures.get("plan") for e in ex.timeline if e.step_id}
    assert marks["preflight"] == "run" and marks["detect"] == "run"
    assert marks["mitigate"] == "approval"
    assert "to on-demand" in next(e.summary for e in ex.timeline if e.step_id == "mitigate")
    replay = next(e for e in ex.timeline if e.step_id == "replay")
    assert replay.figures["plan"] == "approval"
    assert replay.figures["missed_writes"] == replay.figures["to_write"] + replay.figures["in_place"]
    assert "already in place" in replay.summary and "writes/s" in replay.summary
    assert marks["nothing_to_do"] == "skip"
    assert marks["verify"] == "run"
    mitigate = ex.steps["mitigate"].outputs
    assert mitigate["current"]["billing_mode"] == "PAY_PER_REQUEST", "the capacity it would set"
    assert mitigate["previous"]["billing_mode"] == "PROVISIONED", "the setting it would keep"
    assert run_plan_value(message)
    # The answer to status says it is a plan too.
    status = pipeline.command(f"status {plan_id}", user_id=PLANNER, channel_id=ACME)
    assert json.loads(status["body"])["text"].startswith("[PLAN]")


def test_clicking_run_this_plan_starts_the_run_with_the_same_parameters_once(pipeline):
    plan_id = plan(pipeline, "throttle partner-acme mode=provisioned write_units=150")
    planned = pipeline.wait_for(plan_id, {"SUCCEEDED"}, 60)
    assert pipeline.drain(60)
    value = run_plan_value(plan_messages(pipeline, plan_id, ACME)[0])

    assert pipeline.click("run_plan", value, user_id="U0ACMESRE", channel_id=ACME)["statusCode"] == 200
    from bot.slack.plan_runs import run_id_for

    run_id = run_id_for(plan_id)
    run = pipeline.wait_for(run_id, {"AWAITING_APPROVAL"}, 60)
    assert run.kind == "run" and run.plan_of == plan_id
    assert run.params == planned.params and run.requested_by == "U0ACMESRE"
    started = run.timeline[0]
    assert started.kind is EventKind.RUN_STARTED and plan_id in started.summary
    assert run.approval is not None and "as planned in" in run.approval.effect

    # A second click starts nothing and says which run the plan started.
    pipeline.click("run_plan", value, user_id="U0ACMESRE", channel_id=ACME)
    told = [
        c.args.get("text", "")
        for c in pipeline.slack.calls
        if c.method == "chat.postEphemeral" and c.args.get("user") == "U0ACMESRE"
    ]
    assert any("already started" in t and run_id in t for t in told), told
    # A plan takes no lock: another plan of the same table runs while this run holds it.
    beside = plan(pipeline, "throttle partner-acme")
    assert pipeline.wait_for(beside, {"SUCCEEDED", "FAILED"}, 60).status is Status.SUCCEEDED
    pipeline.command(f"cancel {run_id}", user_id="U0ACMESRE", channel_id=ACME)
    pipeline.wait_for(run_id, {"CANCELLED", "FAILED", "TIMED_OUT", "SUCCEEDED"}, 60)


def test_a_run_from_a_plan_shows_the_planned_effect_beside_a_changed_one(pipeline):
    plan_id = plan(pipeline, "throttle partner-acme mode=provisioned write_units=170")
    pipeline.wait_for(plan_id, {"SUCCEEDED"}, 60)
    assert pipeline.drain(60)
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    table = ddb.describe_table(TableName="acme-orders")["Table"]["ProvisionedThroughput"]
    try:
        # The partner's state changes between the plan and the run.
        ddb.update_table(
            TableName="acme-orders",
            ProvisionedThroughput={"ReadCapacityUnits": table["ReadCapacityUnits"], "WriteCapacityUnits": 7},
        )
        value = run_plan_value(plan_messages(pipeline, plan_id, ACME)[0])
        pipeline.click("run_plan", value, user_id="U0ACMESRE", channel_id=ACME)
        from bot.slack.plan_runs import run_id_for

        run_id = run_id_for(plan_id)
        run = pipeline.wait_for(run_id, {"AWAITING_APPROVAL"}, 60)
        assert run.approval is not None
        assert f"changed since plan {plan_id}, which showed:" in run.approval.effect
        pipeline.command(f"cancel {run_id}", user_id="U0ACMESRE", channel_id=ACME)
        pipeline.wait_for(run_id, {"CANCELLED", "FAILED", "TIMED_OUT", "SUCCEEDED"}, 60)
    finally:
        ddb.update_table(
            TableName="acme-orders",
            ProvisionedThroughput={k: table[k] for k in ("ReadCapacityUnits", "WriteCapacityUnits")},
        )


def test_a_plan_in_a_channel_not_allowed_for_the_partner_is_refused(pipeline):
    response = pipeline.command("plan throttle partner-acme", user_id=PLANNER, channel_id="C0GLOBEXOPS")
    answer = json.loads(response["body"])["text"]
    assert "plan it there" in answer and "<#C0ACMEOPS>" in answer
    bad = pipeline.command("plan throttle partner-acme mode=sideways", user_id=PLANNER, channel_id=ACME)
    assert "mode" in json.loads(bad["body"])["text"]
    forced = pipeline.command("plan throttle partner-acme force=true", user_id=PLANNER, channel_id=ACME)
    assert "a plan takes no lock" in json.loads(forced["body"])["text"]


def test_the_button_is_refused_in_another_channel(pipeline):
    plan_id = plan(pipeline, "consistency partner-acme")
    pipeline.wait_for(plan_id, {"SUCCEEDED"}, 60)
    value = json.dumps({"plan_id": plan_id})
    pipeline.click("run_plan", value, user_id="U0GLOBEXLEAD", channel_id="C0GLOBEXOPS")
    from bot.slack.plan_runs import run_id_for

    time.sleep(0.2)
    assert pipeline.execution(run_id_for(plan_id)) is None


@pytest.mark.slow
@pytest.mark.parametrize("partner", sorted(CATALOG.partners))
@pytest.mark.parametrize("runbook", sorted(CATALOG.runbooks))
def test_a_plan_leaves_every_production_table_store_and_capacity_exactly_as_it_was(
    pipeline, runbook, partner
):
    session = boto3.session.Session()
    before = production(session)
    channel = CATALOG.partners[partner].channels[0]
    plan_id = plan(pipeline, f"{runbook} {partner}", channel=channel)
    ex = pipeline.wait_for(plan_id, {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"}, 90)
    assert pipeline.drain(60)
    assert production(session) == before, f"plan {runbook} {partner} changed a partner resource"
    assert ex.status is Status.SUCCEEDED and ex.kind == "plan", ex.error
    assert not ex.approval and not ex.approved_steps, "a plan asks for no approval"
    assert not any(e.error_code == "PlanRefusesWrite" for e in ex.timeline), (
        "the previews only read: the guard never had to refuse"
    )
    assert len(plan_messages(pipeline, plan_id, channel)) == 1
