"""Block Kit messages: a plain-text fallback, Slack's limits, buttons per CONTRACT §3, people and time."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.slack import render
from bot.store.model import Approval, EventKind, Execution, Status, TimelineEvent

T0 = 1_795_000_000_000


def execution(**kw) -> Execution:
    base = dict(
        execution_id="rb-abcdefghij",
        runbook="throttle",
        runbook_version="0123456789abcdef",
        partner="partner-acme",
        status=Status.RUNNING,
        version=4,
        params={},
        requested_by="U0REQUESTER",
        channel="C0ACMEOPS",
        created_at_ms=T0,
        updated_at_ms=T0 + 60_000,
        total_steps=7,
        sla_resolution_minutes=120,
    )
    base.update(kw)
    return Execution(**base)


def texts(blocks: list[dict]) -> list[str]:
    found = []
    for block in blocks:
        if "text" in block:
            found.append(block["text"]["text"])
        for element in block.get("elements", []):
            if "text" in element:
                found.append(element["text"] if isinstance(element["text"], str) else element["text"]["text"])
    return found


def assert_within_slack_limits(message: render.Message) -> None:
    assert message.text.strip(), "every message has a plain-text fallback"
    assert len(message.text) <= 3000 * 4
    assert len(message.blocks) <= 50
    for block in message.blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "context":
            assert len(block["elements"]) <= 10
            assert all(len(e["text"]) <= 3000 for e in block["elements"])
        if block["type"] == "actions":
            assert len(block["block_id"]) <= 255
            for button in block["elements"]:
                assert len(button["text"]["text"]) <= 75 and len(button["action_id"]) <= 255
                assert len(button["value"]) <= 2000


def test_an_approval_request_has_approve_and_reject_buttons_that_carry_the_version():
    message = render.approval_request(
        execution(status=Status.AWAITING_APPROVAL),
        "replay",
        "Replay throttled writes",
        "writes up to 300 missed writes into acme-orders at ≤ 200 writes/s",
        ("U0ACMELEAD", "S0ACMEONCALL"),
        T0 + 1_800_000,
        version=4,
    )
    assert_within_slack_limits(message)
    (actions,) = [b for b in message.blocks if b["type"] == "actions"]
    assert [b["action_id"] for b in actions["elements"]] == ["approve", "approve_comment", "reject"]
    for button in actions["elements"]:
        assert json.loads(button["value"]) == {
            "execution_id": "rb-abcdefghij",
            "step_id": "replay",
            "version": 4,
        }
    shown = "\n".join(texts(message.blocks))
    assert "300 missed writes" in shown and "<@U0ACMELEAD>" in shown and "<!subteam^S0ACMEONCALL>" in shown
    assert "not the requester, <@U0REQUESTER>" in shown
    assert "<!date^1795001800^{time}|" in shown


def test_a_decided_approval_names_who_decided_and_has_no_buttons():
    message = render.approval_decided(
        execution(), "replay", "Replay throttled writes", "writes 300", "approved", "U0ACMELEAD", T0
    )
    assert not [b for b in message.blocks if b["type"] == "actions"]
    assert "approved by <@U0ACMELEAD>" in "\n".join(texts(message.blocks))
    assert "@U0ACMELEAD" in message.text


def test_the_parent_message_shows_progress_elapsed_time_and_the_sla():
    ex = execution(
        status=Status.AWAITING_APPROVAL, approval=Approval("replay", T0, T0 + 1_800_000, "writes 300")
    )
    message = render.parent_message(ex, "Throttled requests", "Acme Logistics", T0 + 90 * 60_000)
    shown = "\n".join(texts(message.blocks))
    assert "needs an approver" in shown and "0/7" in shown and "elapsed 1h 30m" in shown
    assert ":warning:" not in shown  # 75% is below the 80% warning
    assert "SLA: 30m 00s left of 120 min (75% used)" in shown and "rb-abcdefghij" in message.text
    late = render.parent_message(ex, "Throttled requests", "Acme Logistics", T0 + 100 * 60_000)
    assert ":warning:" in "\n".join(texts(late.blocks))
    breached = render.parent_message(ex, "Throttled requests", "Acme Logistics", T0 + 130 * 60_000)
    assert "SLA breached 10m 00s ago" in "\n".join(texts(breached.blocks))


def test_a_drill_is_labelled_in_the_channel():
    message = render.parent_message(execution(drill=True), "Throttled requests", "Acme Logistics", T0)
    assert message.blocks[0]["text"]["text"].startswith("[DRILL]") and message.text.startswith("[DRILL]")


def test_a_retry_quotes_the_error_code_and_its_catalog_meaning():
    event = TimelineEvent(
        7,
        T0,
        EventKind.STEP_RETRY,
        "detect failed; retrying in 2s (attempt 2 of 3)",
        step_id="detect",
        error_code="ProvisionedThroughputExceededException",
    )
    message = render.timeline_reply(execution(), event, "Requests exceeded the table's capacity.", "Detect")
    shown = "\n".join(texts(message.blocks))
    assert "`ProvisionedThroughputExceededException`: Requests exceeded the table's capacity." in shown
    assert "[ProvisionedThroughputExceededException]" in message.text


@settings(max_examples=60, deadline=None)
@given(
    summary=st.text(min_size=0, max_size=20_000),
    title=st.text(min_size=1, max_size=2_000),
    figures=st.dictionaries(st.text(max_size=50), st.text(max_size=5_000), max_size=20),
)
def test_huge_or_hostile_text_never_breaks_slacks_limits(summary, title, figures):
    ex = execution(error={"code": "X" * 500, "message": summary}, status=Status.FAILED)
    event = TimelineEvent(
        1, T0, EventKind.STEP_FAILED, summary, step_id="s", error_code="E" * 300, figures=figures
    )
    for message in (
        render.timeline_reply(ex, event, summary, title),
        render.parent_message(ex, title, title, T0),
        render.approval_request(ex, "s" * 300, title, summary, ("U1",) * 50, T0, version=1),
        render.approval_decided(ex, "s", title, summary, "rejected", "U1", T0),
    ):
        assert_within_slack_limits(message)
    assert (
        "<script>"
        not in render.timeline_reply(ex, event._replace if False else event, None, "<script>").blocks[0][
            "text"
        ]["text"]
    )
