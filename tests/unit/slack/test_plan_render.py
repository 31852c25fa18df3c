"""The plan's one message: every step in order with its mark, the Run this plan button when the
plan is ready, the [PLAN] label everywhere, and Slack's limits whatever the steps say."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.engine import planner
from bot.slack import render
from bot.slack.plan_render import RUN_PLAN_ACTION, plan_id_of, plan_message, planning
from bot.store.model import EventKind, Execution, Status, TimelineEvent
from tests.unit.slack.test_block_kit import assert_within_slack_limits, texts

T0 = 1_795_000_000_000
THROTTLE = load_catalog().runbooks["throttle"]


def plan(status: Status = Status.SUCCEEDED, events: tuple[TimelineEvent, ...] = (), **kw) -> Execution:
    base = dict(
        execution_id="rb-abcdefghij",
        runbook="throttle",
        runbook_version="0123456789abcdef",
        partner="partner-acme",
        status=status,
        version=9,
        params={"table": "orders", "mode": "on-demand"},
        requested_by="U0REQUESTER",
        channel="C0ACMEOPS",
        created_at_ms=T0,
        updated_at_ms=T0 + 9_000,
        total_steps=len(THROTTLE.steps),
        kind="plan",
        timeline=events,
    )
    base.update(kw)
    return Execution(**base)


def marked(
    seq: int, step_id: str, mark: str, summary: str, kind: EventKind = EventKind.STEP_FINISHED
) -> TimelineEvent:
    return TimelineEvent(seq, T0 + seq, kind, summary, step_id, figures={"plan": mark})


READY = (
    TimelineEvent(1, T0, EventKind.RUN_STARTED, "plan started", actor="U0REQUESTER"),
    marked(2, "preflight", "run", "pre-run checklist passed (5 checks)"),
    marked(3, "detect", "run", "acme-orders: throttled for 8 of the last 15 minutes"),
    marked(
        4,
        "nothing_to_do",
        "skip",
        "would skip, because its condition is false: not steps.detect.outputs.throttling",
        EventKind.STEP_SKIPPED,
    ),
    marked(5, "hot_keys", "run", "hottest key CUSTOMER#0001 has 59% of 300 failed writes"),
    marked(
        6, "mitigate", "approval", "needs approval: changes acme-orders from 100 RCU / 50 WCU to on-demand"
    ),
    marked(7, "replay", "approval", "needs approval: 300 missed writes: 240 to write, 60 already in place"),
    marked(8, "verify", "run", "every missed write is in place"),
)


def test_a_ready_plan_lists_every_step_in_order_with_its_mark_and_a_run_button():
    message = plan_message(plan(events=READY), THROTTLE, "Acme Logistics")
    assert_within_slack_limits(message)
    shown = "\n".join(texts(message.blocks))
    assert (
        message.blocks[0]["text"]["text"] == "[PLAN] Throttled requests on a partner table · Acme Logistics"
    )
    order = [shown.index(f"*{s.title}*") for s in THROTTLE.steps]
    assert order == sorted(order), "steps in the runbook's order"
    assert "_would run_: acme-orders: throttled for 8" in shown
    assert "_would skip, because_ its condition is false: not steps.detect.outputs.throttling" in shown
    assert "_needs approval_: changes acme-orders from 100 RCU / 50 WCU to on-demand" in shown
    assert "Parameters: mode=on-demand, table=orders" in shown
    assert "on_failure steps run: `rollback`" in shown
    button = message.blocks[-1]["elements"][0]
    assert button["action_id"] == RUN_PLAN_ACTION and button["text"]["text"] == "Run this plan"
    assert json.loads(button["value"]) == {"plan_id": "rb-abcdefghij"}
    assert button["confirm"]["confirm"]["text"] == "Start the run"
    assert message.text.startswith("[PLAN] Throttled requests on a partner table for Acme Logistics")


def test_a_plan_that_stops_shows_where_and_the_rest_as_not_reached_still_with_its_button():
    events = (
        *READY[:3],
        marked(4, "nothing_to_do", "end", "the run would end here: no throttling in the window"),
    )
    message = plan_message(plan(events=events), THROTTLE, "Acme")
    shown = "\n".join(texts(message.blocks))
    assert "_the run would end here_: no throttling in the window" in shown
    assert shown.count("_not reached_") == 4
    stopped = (
        *READY[:3],
        marked(
            4, "nothing_to_do", planner.STOP, "the run would stop here: check failed", EventKind.STEP_FAILED
        ),
    )
    shown = "\n".join(texts(plan_message(plan(events=stopped), THROTTLE, "Acme").blocks))
    assert ":octagonal_sign: *No throttling found* — _the run would stop here_: check failed" in shown


def test_a_plan_in_progress_has_no_button_yet_and_says_how_far_it_is():
    message = plan_message(plan(Status.RUNNING, READY[:3]), THROTTLE, "Acme")
    shown = "\n".join(texts(message.blocks))
    assert "*Planning…* step 3 of 7" in shown and "_planning…_" in shown
    assert not any(b["type"] == "actions" for b in message.blocks)
    cancelled = plan_message(plan(Status.CANCELLED, READY[:3]), THROTTLE, "Acme")
    assert not any(b["type"] == "actions" for b in cancelled.blocks)


def test_status_timeline_and_the_ack_say_it_is_a_plan():
    ex = plan(events=READY)
    assert render.status_text(ex, THROTTLE, "Acme").text.startswith("[PLAN]")
    assert render.timeline_text(ex, THROTTLE, "Acme").text.startswith("[PLAN]")
    ack = planning(ex)
    assert ack.text.startswith("[PLAN] Planning `throttle` for `partner-acme`: plan `rb-abcdefghij`")
    assert "changes nothing" in ack.text


@pytest.mark.parametrize(
    "value", ["", "{}", "[]", '{"plan_id": 5}', '{"plan_id": "rb-<script>"}', "not json"]
)
def test_a_button_value_that_names_no_plan_is_refused(value):
    with pytest.raises(ValueError, match="does not name a plan"):
        plan_id_of(value)


@settings(max_examples=50, deadline=None)
@given(
    st.text(min_size=0, max_size=5000), st.sampled_from(["run", "approval", "skip", "stop", "fails", "odd"])
)
def test_any_summary_stays_within_slacks_limits_and_is_never_markup(summary, mark):
    events = tuple(
        marked(i + 2, s.id, mark, summary + " <!channel> <@U1>") for i, s in enumerate(THROTTLE.steps)
    )
    message = plan_message(plan(events=events), THROTTLE, "<b>Acme</b>")
    assert_within_slack_limits(message)
    shown = "\n".join(texts(message.blocks))
    assert "<!channel>" not in shown and "<@U1>" not in shown
