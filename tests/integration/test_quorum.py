"""Approvals that auditors accept, through the local pipeline: a two-approver quorum, a comment
and a reason through the dialog (views.open on the strict stand-in, then view_submission), the
fallback when the dialog cannot open, and the reminder at half the expiry."""

from __future__ import annotations

import json
import time

import pytest

from bot.local.lambda_context import LambdaContext
from bot.local.pipeline import LocalPipeline
from bot.store.model import EventKind, Status

pytestmark = pytest.mark.integration

ACME = "C0ACMEOPS"


@pytest.fixture(scope="module")
def quorum(acme_pipeline) -> LocalPipeline:
    """partner-acme asking two distinct approvers for every risky step."""
    return acme_pipeline("approvals: {high: 2, critical: 2}")


def start(pipeline: LocalPipeline, text: str = "throttle partner-acme") -> str:
    response = pipeline.command(text, user_id="U0DEVONCALL", channel_id=ACME)
    answer = json.loads(response["body"])["text"]
    assert "execution `" in answer, answer
    return answer.split("execution `")[1].split("`")[0]


def button(pipeline: LocalPipeline, execution_id: str) -> str:
    """What the approval message's buttons carry, read from the message the publisher posted."""
    assert pipeline.drain(60)
    ex = pipeline.execution(execution_id)
    for message in reversed(approval_messages(pipeline, execution_id)):
        for block in message.get("blocks") or []:
            if block["type"] == "actions":
                value = block["elements"][0]["value"]
                if json.loads(value)["step_id"] == ex.approval.step_id:
                    return str(value)
    raise AssertionError(f"no approval message with buttons for {execution_id}")


def approval_messages(pipeline: LocalPipeline, execution_id: str) -> list[dict]:
    parent = next(
        m
        for m in pipeline.slack.messages(ACME)
        if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == execution_id
    )
    return [
        r
        for r in pipeline.slack.thread(ACME, parent["ts"])[1:]
        if any(b.get("block_id", "").startswith("approval:") for b in r.get("blocks") or [])
        or "Approval needed" in r.get("text", "")
        or "approved" in r.get("text", "")
        or "rejected" in r.get("text", "")
    ]


def ephemerals(pipeline: LocalPipeline, user: str) -> list[str]:
    return [
        str(c.args["text"])
        for c in pipeline.slack.calls
        if c.method == "chat.postEphemeral" and c.args.get("user") == user
    ]


def waiting_on(pipeline: LocalPipeline, execution_id: str, step_id: str = "") -> None:
    """Until the run waits on `step_id`'s approval (any step's, given none: the first run
    changed the table's capacity already, so later ones skip `mitigate` and ask for `replay`)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL", "FAILED", "SUCCEEDED"}, 60)
        if ex.status is not Status.AWAITING_APPROVAL:
            raise AssertionError(f"{execution_id} ended {ex.status.value} before {step_id}: {ex.error}")
        if ex.approval.step_id == step_id or not step_id:
            return
        time.sleep(0.05)
    raise AssertionError(f"{execution_id} never waited on {step_id}")


def end(pipeline: LocalPipeline, execution_id: str) -> None:
    """Cancel what is left of a run (its rollback waiting on approvers), freeing the table's lock."""
    if not pipeline.execution(execution_id).status.terminal:
        pipeline.command(f"cancel {execution_id}", user_id="U0DEVONCALL", channel_id=ACME)
    pipeline.wait_for(execution_id, {"CANCELLED", "FAILED", "SUCCEEDED", "TIMED_OUT"}, 60)


def rejected(pipeline: LocalPipeline, execution_id: str) -> tuple:
    """The run once its rejection is committed (its on_failure rollback may then ask approval
    in turn), and the rejection's timeline event."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ex = pipeline.execution(execution_id)
        events = [e for e in ex.timeline if e.kind is EventKind.APPROVAL_REJECTED]
        if events:
            assert len(events) == 1
            return ex, events[0]
        time.sleep(0.05)
    raise AssertionError(f"{execution_id} was never rejected")


def test_two_distinct_approvers_are_needed_and_a_rejection_carries_its_reason(quorum):
    execution_id = start(quorum)
    waiting_on(quorum, execution_id, "mitigate")
    value = button(quorum, execution_id)
    assert quorum.execution(execution_id).approval.required == 2

    assert quorum.click("approve", value, user_id="U0ACMELEAD")["statusCode"] == 200
    ex = quorum.execution(execution_id)
    assert ex.status is Status.AWAITING_APPROVAL and [v.user for v in ex.approval.votes] == ["U0ACMELEAD"]
    assert quorum.drain(60)
    (request,) = [m for m in approval_messages(quorum, execution_id) if "Approval needed" in m["text"]]
    shown = json.dumps(request["blocks"])
    assert "1 of 2 approvals" in shown and "<@U0ACMELEAD>" in shown
    assert any(b["type"] == "actions" for b in request["blocks"]), "buttons stay until the quorum is met"

    # The same approver again, by either button: each approver decides once.
    assert quorum.click("approve", value, user_id="U0ACMELEAD")["statusCode"] == 200
    assert quorum.click("reject", value, user_id="U0ACMELEAD")["statusCode"] == 200
    assert "each approver decides once" in ephemerals(quorum, "U0ACMELEAD")[-1]
    assert len(quorum.execution(execution_id).approval.votes) == 1
    assert not quorum.slack.open_views("U0ACMELEAD"), "no dialog for someone who may not decide"

    # The second approver comments through the dialog; the quorum is met.
    before = len(quorum.slack.calls)
    assert quorum.click("approve_comment", value, user_id="U0ACMESRE")["statusCode"] == 200
    clicked = [
        c.method for c in quorum.slack.calls[before:] if c.method in {"views.open", "chat.postEphemeral"}
    ]
    assert clicked == ["views.open"]
    (dialog,) = quorum.slack.open_views("U0ACMESRE")
    assert dialog["title"]["text"] == "Approve with comment"
    assert quorum.execution(execution_id).status is Status.AWAITING_APPROVAL, "opening decides nothing"
    result = quorum.submit_view(dialog["id"], {"note": "checked the <!channel> dashboard"})
    assert result["status"] == 200 and result["view"] == {}, result
    waiting_on(quorum, execution_id, "replay")
    ex = quorum.execution(execution_id)
    granted = [e for e in ex.timeline if e.kind is EventKind.APPROVAL_GRANTED]
    assert [e.actor for e in granted] == ["U0ACMESRE"]
    assert "2 of 2" in granted[0].summary and "dashboard" in granted[0].summary
    assert ex.steps["mitigate"].outcome in {"succeeded", "skipped"}

    # The replay: a rejection asks for a reason first; an empty one is refused on the field.
    value = button(quorum, execution_id)
    assert quorum.click("reject", value, user_id="U0ACMELEAD")["statusCode"] == 200
    (dialog,) = quorum.slack.open_views("U0ACMELEAD")
    empty = quorum.submit_view(dialog["id"], {"note": "   "})
    assert empty["answer"]["response_action"] == "errors" and "note" in empty["answer"]["errors"]
    assert empty["view"]["errors"]["note"], "the modal stays open with the message under the field"
    assert quorum.execution(execution_id).status is Status.AWAITING_APPROVAL
    done = quorum.submit_view(dialog["id"], {"note": "partner is mid-deploy; replay after 14:00"})
    assert done["view"] == {}
    ended, event = rejected(quorum, execution_id)
    assert (
        event.actor == "U0ACMELEAD" and event.summary == "rejected: partner is mid-deploy; replay after 14:00"
    )
    assert ended.error["code"] == "ApprovalRejected" and ended.error["by"] == "U0ACMELEAD"
    assert ended.error["reason"] == "partner is mid-deploy; replay after 14:00"
    assert ended.phase == "on_failure" and "replay" not in ended.steps
    assert quorum.drain(90)
    closed = [m for m in approval_messages(quorum, execution_id) if "replay" in json.dumps(m["blocks"])]
    assert any("Reason: partner is mid-deploy" in json.dumps(m["blocks"]) for m in closed)
    assert "&lt;!channel&gt;" in json.dumps(approval_messages(quorum, execution_id)), "a comment never pings"
    end(quorum, execution_id)


def test_a_rejection_whose_dialog_cannot_open_proceeds_without_a_reason_and_says_so(quorum):
    execution_id = start(quorum)
    waiting_on(quorum, execution_id)
    value = button(quorum, execution_id)
    quorum.slack.trigger_seconds = 0.0  # every trigger_id has expired by the time the bot uses it
    before = len(quorum.slack.calls)
    try:
        assert quorum.click("reject", value, user_id="U0ACMESRE")["statusCode"] == 200
    finally:
        quorum.slack.trigger_seconds = 3.0
    by_the_click = [
        c for c in quorum.slack.calls[before:] if c.method in {"views.open", "chat.postEphemeral"}
    ]
    assert [(c.method, c.error) for c in by_the_click] == [("views.open", "expired_trigger_id")], (
        "one Slack call per click, time-boxed"
    )
    ended, event = rejected(quorum, execution_id)
    assert event.actor == "U0ACMESRE"
    assert "no reason given" in event.summary and "expired_trigger_id" in event.summary
    assert ended.error["reason"] == event.summary.removeprefix("rejected: ")
    end(quorum, execution_id)


def test_a_dialog_submitted_after_the_run_moved_on_changes_nothing(quorum):
    execution_id = start(quorum)
    waiting_on(quorum, execution_id)
    value = button(quorum, execution_id)
    assert quorum.click("reject", value, user_id="U0ACMESRE")["statusCode"] == 200
    (dialog,) = quorum.slack.open_views("U0ACMESRE")
    assert quorum.click("reject", value, user_id="U0ACMELEAD")["statusCode"] == 200
    (other,) = quorum.slack.open_views("U0ACMELEAD")
    assert quorum.submit_view(other["id"], {"note": "not now"})["view"] == {}
    rejected(quorum, execution_id)
    late = quorum.submit_view(dialog["id"], {"note": "me too"})
    assert late["answer"]["response_action"] == "update", late
    assert "nothing changed" in json.dumps(late["view"]["blocks"])
    assert late["view"]["title"]["text"] == "Nothing changed"
    ended, event = rejected(quorum, execution_id)
    assert event.actor == "U0ACMELEAD" and ended.error["reason"] == "not now"
    end(quorum, execution_id)


def test_nobody_deciding_gets_a_reminder_at_half_the_expiry_then_the_expiry(quorum):
    from bot.handlers import sweeper

    execution_id = start(quorum)
    waiting_on(quorum, execution_id)
    ex = quorum.execution(execution_id)
    assert ex.due_reason == "reminder" and ex.due_at_ms == ex.approval.remind_at_ms
    assert ex.approval.remind_at_ms - ex.approval.requested_at_ms == 15 * 60_000  # half of 30 minutes
    value = button(quorum, execution_id)

    later = time.time() + 16 * 60  # the sweeper's run a quarter of an hour on
    sweeper.handler({}, LambdaContext("SweeperFunction", 60), clock=lambda: later)
    reminded = quorum.execution(execution_id)
    assert reminded.status is Status.AWAITING_APPROVAL
    assert reminded.timeline[-1].kind is EventKind.APPROVAL_REMINDER
    assert reminded.due_reason == "expiry" and reminded.due_at_ms == reminded.approval.expires_at_ms
    assert quorum.drain(60)
    parent = next(
        m
        for m in quorum.slack.messages(ACME)
        if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == execution_id
    )
    reminder = quorum.slack.thread(ACME, parent["ts"])[-1]
    assert "<@U0ACMELEAD>" in json.dumps(reminder["blocks"]) and "<!subteam^S0ACMEONCALL>" in json.dumps(
        reminder["blocks"]
    )
    # The buttons of the message posted before the reminder still decide.
    assert quorum.click("approve", value, user_id="U0ACMELEAD")["statusCode"] == 200
    assert [v.user for v in quorum.execution(execution_id).approval.votes] == ["U0ACMELEAD"]
    end(quorum, execution_id)
