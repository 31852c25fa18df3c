"""Block Kit rendering (bot/slack/render.py): every message has a plain-text fallback and stays inside
Slack's limits whatever the data; approvals carry CONTRACT §3's buttons and say what will happen;
people are mentions, times are Slack date tokens, durations read like a person wrote them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.engine.durations import format_duration
from bot.engine.model import Parameter, ParamType, Risk, Runbook, Step
from bot.slack import render
from bot.slack.approvals import ButtonValue, parse_button_value
from bot.store.model import Approval, EventKind, Execution, Status, StepRecord, TimelineEvent

T0 = 1_795_000_000_000  # 2026-11-18 11:06:40 UTC
CATALOG = load_catalog()
THROTTLE = CATALOG.runbooks["throttle"]
DATE_TOKEN = re.compile(r"<!date\^(\d+)\^([^|>]+)\|([^>]+)>")
STEP_ID = re.compile(r"[a-z][a-z0-9_]{0,47}")  # runbooks/schema.json, step id


def execution(**changes: Any) -> Execution:
    base = Execution(
        execution_id="rb-k3j7q2m4xa",
        runbook="throttle",
        runbook_version="0123456789abcdef",
        partner="partner-acme",
        status=Status.RUNNING,
        version=4,
        params={"table": "orders"},
        requested_by="U0DEVONCALL",
        channel="C0ACMEOPS",
        created_at_ms=T0,
        updated_at_ms=T0 + 60_000,
        total_steps=7,
        sla_resolution_minutes=120,
    )
    return dataclasses.replace(base, **changes)


def event(kind: EventKind = EventKind.STEP_FINISHED, **changes: Any) -> TimelineEvent:
    return dataclasses.replace(TimelineEvent(3, T0 + 5_000, kind, "detect finished"), **changes)


def approval_request(ex: Execution | None = None, **changes: Any) -> render.Message:
    args: dict[str, Any] = {
        "step_id": "replay",
        "step_title": "Replay throttled writes",
        "effect": "writes up to 300 missed writes into acme-orders at ≤ 200 writes/s",
        "approvers": ("U0ACMELEAD", "S0ACMEONCALL"),
        "expires_at_ms": T0 + 1_800_000,
        "version": 5,
    }
    args.update(changes)
    return render.approval_request(ex or execution(status=Status.AWAITING_APPROVAL), **args)


# -- what Slack accepts --------------------------------------------------------------------------


def walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from walk(child)


def shown(message: render.Message) -> str:
    """Every text a person sees in the message's blocks."""
    return "\n".join(
        str(node["text"])
        for node in walk(message.blocks)
        if node.get("type") in {"mrkdwn", "plain_text"} and "text" in node
    )


def assert_slack_accepts(message: render.Message) -> None:
    """Slack's documented limits for chat.postMessage/chat.update and the block types we use."""
    assert isinstance(message.text, str) and message.text.strip(), "a plain-text fallback for notifications"
    assert len(message.text) <= 40_000
    json.dumps(message.blocks)  # plain JSON, nothing else
    assert len(message.blocks) <= 50
    for block in message.blocks:
        assert len(block.get("block_id", "")) <= 255
        kind = block["type"]
        assert kind in {"header", "section", "context", "actions", "divider"}
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 1 <= len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert 1 <= len(block["text"]["text"]) <= 3000
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            assert all(1 <= len(e["text"]) <= 3000 for e in block["elements"])
        elif kind == "actions":
            assert 1 <= len(block["elements"]) <= 25
            for button in block["elements"]:
                assert button["type"] == "button"
                assert button["text"]["type"] == "plain_text" and 1 <= len(button["text"]["text"]) <= 75
                assert 1 <= len(button["action_id"]) <= 255
                assert len(button.get("value", "")) <= 2000
                assert button.get("style", "primary") in {"primary", "danger"}
                if "confirm" in button:
                    confirm = button["confirm"]
                    assert len(confirm["title"]["text"]) <= 100 and len(confirm["text"]["text"]) <= 300
                    assert len(confirm["confirm"]["text"]) <= 30 and len(confirm["deny"]["text"]) <= 30


def _drill(ex):
    return dataclasses.replace(
        ex,
        drill=True,
        drill_faults={"throttle": 0.3, "timeout": 0.05},
        drill_until_ms=ex.created_at_ms + 120_000,
    )


def every_message() -> list[tuple[str, render.Message]]:
    ex = execution(
        status=Status.AWAITING_APPROVAL,
        approval=Approval("replay", T0, T0 + 1_800_000, "writes 300"),
        steps={"detect": StepRecord("detect", "succeeded", 1, T0, T0 + 5_000)},
        timeline=tuple(event(seq=i, at_ms=T0 + i * 1000) for i in range(1, 6)),
    )
    messages = [
        ("parent", render.parent_message(ex, "Throttled requests", "Acme Logistics", T0 + 90_000)),
        ("approval request", approval_request(ex)),
        ("status", render.status_text(ex, THROTTLE)),
        ("timeline", render.timeline_text(ex)),
        ("refusal", render.refusal("no runbook named `x`; runbooks: throttle")),
        ("started", render.started(execution(execution_id="rb-k3j7q2m4xa"))),
        ("started drill", render.started(_drill(execution(execution_id="rb-k3j7q2m4xa")))),
        ("list", render.run_list(CATALOG.runbooks, CATALOG.partners, "C0ACMEOPS")),
        ("list elsewhere", render.run_list(CATALOG.runbooks, CATALOG.partners, "C0NOWHERE")),
        ("help", render.help_text(None, CATALOG.runbooks)),
        ("errors", render.errors_text(CATALOG.errors, None)),
        ("error entry", render.errors_text(CATALOG.errors, "ProvisionedThroughputExceededException")),
        ("unknown error", render.errors_text(CATALOG.errors, "NoSuchCode")),
    ]
    messages += [
        (f"help {name}", render.help_text(rb, CATALOG.runbooks)) for name, rb in CATALOG.runbooks.items()
    ]
    messages += [
        (f"reply {kind}", render.timeline_reply(ex, event(kind, actor="U0ACMELEAD"), None, "Detect"))
        for kind in EventKind
    ]
    messages += [
        (f"decided {d}", render.approval_decided(ex, "replay", "Replay", "writes 300", d, by, T0))
        for d, by in [("approved", "U0ACMELEAD"), ("rejected", "U0ACMESRE"), ("expired", "")]
    ]
    messages += [
        (f"parent {s}", render.parent_message(execution(status=s), "Throttled", "Acme", T0 + 60_000))
        for s in Status
    ]
    return messages


@pytest.mark.parametrize(("name", "message"), every_message(), ids=[n for n, _ in every_message()])
def test_every_message_has_a_plain_text_fallback_and_slack_accepts_its_blocks(name, message):
    assert_slack_accepts(message)


# Huge and hostile data: step outputs, AWS error messages, titles, approver lists.

long_text = st.text(min_size=0, max_size=20_000)
some_text = st.text(min_size=1, max_size=3_000)
figures = st.dictionaries(
    st.text(max_size=200),
    st.one_of(st.text(max_size=10_000), st.integers(), st.floats(allow_nan=False), st.lists(st.integers())),
    max_size=30,
)
user_ids = st.from_regex(r"[UWS][A-Z0-9]{8,20}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    summary=long_text,
    title=some_text,
    message=long_text,
    code=st.text(max_size=500),
    step_figures=figures,
    meaning=st.none() | long_text,
    actor=st.just("") | user_ids | st.text(max_size=300).map(lambda t: "alarm:" + t),
    duration_ms=st.none() | st.integers(min_value=0, max_value=10**12),
    kind=st.sampled_from(EventKind),
)
def test_a_timeline_reply_stays_within_slacks_limits_for_any_step_output(
    summary, title, message, code, step_figures, meaning, actor, duration_ms, kind
):
    ex = execution(status=Status.FAILED, error={"code": code, "message": message})
    reply = render.timeline_reply(
        ex,
        event(
            kind, summary=summary, error_code=code, figures=step_figures, actor=actor, duration_ms=duration_ms
        ),
        meaning,
        title,
    )
    assert_slack_accepts(reply)


@settings(max_examples=60, deadline=None)
@given(
    title=some_text,
    partner=some_text,
    message=long_text,
    code=st.text(max_size=2_000),
    status=st.sampled_from(Status),
    drill=st.booleans(),
    now=st.integers(min_value=T0, max_value=T0 + 10 * 86_400_000),
)
def test_the_parent_message_stays_within_slacks_limits_for_any_title_and_error(
    title, partner, message, code, status, drill, now
):
    ex = execution(
        status=status,
        drill=drill,
        error={"code": code, "message": message},
        approval=Approval("replay", T0, T0 + 1, message),
    )
    assert_slack_accepts(render.parent_message(ex, title, partner, now))
    assert_slack_accepts(render.status_text(ex, THROTTLE))


@settings(max_examples=60, deadline=None)
@given(
    step_id=st.from_regex(STEP_ID, fullmatch=True),
    title=st.text(max_size=3_000),
    effect=long_text.filter(str.strip),
    approvers=st.lists(user_ids, max_size=60).map(tuple),
    decision=st.sampled_from(["approved", "rejected", "expired"]),
    decider=st.just("") | user_ids,
    version=st.integers(min_value=0, max_value=2**53),
)
def test_approval_messages_stay_within_slacks_limits_for_any_effect(
    step_id, title, effect, approvers, decision, decider, version
):
    ex = execution(status=Status.AWAITING_APPROVAL)
    assert_slack_accepts(
        approval_request(
            ex, step_id=step_id, step_title=title, effect=effect, approvers=approvers, version=version
        )
    )
    assert_slack_accepts(render.approval_decided(ex, step_id, title, effect, decision, decider, T0))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.builds(
            TimelineEvent,
            seq=st.integers(1, 10_000),
            at_ms=st.integers(T0, T0 + 86_400_000),
            kind=st.sampled_from(EventKind),
            summary=st.text(max_size=5_000),
            actor=st.just("") | user_ids,
            error_code=st.text(max_size=200),
        ),
        max_size=120,
    )
)
def test_the_timeline_answer_stays_within_slacks_limits_however_long_the_run(events):
    assert_slack_accepts(render.timeline_text(execution(timeline=tuple(events))))


@settings(max_examples=40, deadline=None)
@given(
    reason=st.text(min_size=1, max_size=20_000).filter(str.strip), code=st.text(min_size=1, max_size=5_000)
)
def test_refusals_and_unknown_error_codes_stay_within_slacks_limits(reason, code):
    assert_slack_accepts(render.refusal(reason))
    assert_slack_accepts(render.errors_text(CATALOG.errors, code))


def runbook_with(description: str, parameters: int = 2) -> Runbook:
    return Runbook(
        name="long",
        title="A runbook with a lot to say",
        description=description,
        parameters=tuple(
            Parameter(f"p{i}", ParamType.STRING, description="d" * 500) for i in range(parameters)
        ),
        steps=tuple(
            Step(f"s{i}", "check", title="T" * 120, risk=Risk(("low", "high")[i % 2])) for i in range(50)
        ),
        on_failure=tuple(Step(f"undo{i}", "notify", title="U" * 120) for i in range(20)),
    )


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=20_000))
def test_help_for_a_runbook_stays_within_slacks_limits_for_a_long_description(description):
    assert_slack_accepts(render.help_text(runbook_with(description), {"long": runbook_with(description)}))


def test_help_for_a_runbook_with_a_very_long_description_stays_within_fifty_blocks():
    description = "\n".join(f"Paragraph {i}: " + "word " * 700 for i in range(60))
    assert_slack_accepts(render.help_text(runbook_with(description), {}))


# -- approvals ----------------------------------------------------------------------------------


def actions_of(message: render.Message) -> list[dict[str, Any]]:
    return [b for b in message.blocks if b["type"] == "actions"]


def test_an_approval_request_has_approve_approve_with_comment_and_reject_buttons():
    (actions,) = actions_of(approval_request())
    buttons = actions["elements"]
    assert [b["action_id"] for b in buttons] == ["approve", "approve_comment", "reject"]
    assert [b["text"]["text"] for b in buttons] == ["Approve", "Approve with comment", "Reject"]
    assert [b.get("style") for b in buttons] == ["primary", None, "danger"]


def test_both_buttons_carry_the_execution_the_step_and_the_version_they_decide():
    (actions,) = actions_of(approval_request(step_id="replay", version=5))
    for button in actions["elements"]:
        assert json.loads(button["value"]) == {
            "execution_id": "rb-k3j7q2m4xa",
            "step_id": "replay",
            "version": 5,
        }
        assert parse_button_value(button["value"]) == ButtonValue("rb-k3j7q2m4xa", "replay", 5)


@settings(max_examples=200, deadline=None)
@given(
    execution_id=st.from_regex(r"rb-[a-z2-7]{10}", fullmatch=True),
    step_id=st.from_regex(STEP_ID, fullmatch=True),
    version=st.integers(min_value=0, max_value=2**53),
)
def test_what_a_button_carries_is_read_back_exactly_by_the_click_handler(execution_id, step_id, version):
    ex = execution(execution_id=execution_id, status=Status.AWAITING_APPROVAL)
    (actions,) = actions_of(approval_request(ex, step_id=step_id, version=version))
    values = {parse_button_value(b["value"]) for b in actions["elements"]}
    assert values == {ButtonValue(execution_id, step_id, version)}


def test_an_approval_request_states_exactly_what_will_happen_in_the_message_the_dialog_and_the_fallback():
    effect = "writes up to 300 missed writes into acme-orders at ≤ 200 writes/s"
    message = approval_request(effect=effect)
    assert effect in message.blocks[0]["text"]["text"]
    assert "Approval needed: Replay throttled writes" in message.blocks[0]["text"]["text"]
    (actions,) = actions_of(message)
    assert actions["elements"][0]["confirm"]["text"]["text"] == effect
    assert effect in message.text and "rb-k3j7q2m4xa" in message.text


def test_an_approval_request_names_who_may_decide_and_that_the_requester_may_not():
    context = approval_request(approvers=("U0ACMELEAD", "W0ENTERPRISE", "S0ACMEONCALL")).blocks[1]
    who = context["elements"][0]["text"]
    assert "<@U0ACMELEAD>" in who and "<@W0ENTERPRISE>" in who and "<!subteam^S0ACMEONCALL>" in who
    assert "not the requester, <@U0DEVONCALL>" in who


def test_an_approval_request_without_approvers_says_so():
    assert "(no approvers configured)" in shown(approval_request(approvers=()))


def test_an_approval_request_shows_when_it_expires_as_a_slack_date():
    assert f"expires <!date^{(T0 + 1_800_000) // 1000}^{{time}}|" in shown(approval_request())


def test_an_effect_from_data_cannot_ping_the_channel_or_hide_a_link():
    message = approval_request(effect="<!channel> replay & <https://evil.example|click here>")
    text = message.blocks[0]["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "<https://" not in text and "&amp;" in text


@pytest.mark.parametrize(
    ("decision", "decider", "reads"),
    [
        ("approved", "U0ACMELEAD", "Replay throttled writes: approved by <@U0ACMELEAD>"),
        ("rejected", "U0ACMESRE", "Replay throttled writes: rejected by <@U0ACMESRE>"),
        ("approved", "W0ENTERPRISE", "approved by <@W0ENTERPRISE>"),
    ],
)
def test_after_a_decision_there_are_no_buttons_and_the_decider_is_a_mention(decision, decider, reads):
    message = render.approval_decided(
        execution(), "replay", "Replay throttled writes", "writes 300", decision, decider, T0 + 60_000
    )
    assert not actions_of(message)
    assert not [n for n in walk(message.blocks) if n.get("type") == "button" or "action_id" in n]
    assert reads in shown(message)
    assert "writes 300" in shown(message)  # what was decided stays on the message
    assert f"{decision} <!date^{(T0 + 60_000) // 1000}^" in shown(message)
    assert f"by @{decider}" in message.text and "<@" not in message.text


def test_an_expired_approval_has_no_buttons_and_names_no_decider():
    message = render.approval_decided(execution(), "replay", "", "writes 300", "expired", "", T0)
    assert not actions_of(message)
    assert "replay: expired*" in shown(message) and " by " not in shown(message)
    assert message.text == "replay expired (rb-k3j7q2m4xa)"


# -- people, times and durations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "shows"),
    [
        ("U0ACMELEAD", "<@U0ACMELEAD>"),
        ("W0ENTERPRISE", "<@W0ENTERPRISE>"),
        ("S0ACMEONCALL", "<!subteam^S0ACMEONCALL>"),
        ("alarm:acme-orders-throttled", "alarm `acme-orders-throttled`"),
        ("alarm:<!channel>", "alarm `&lt;!channel&gt;`"),
        ("", "Runbook Bot"),
    ],
)
def test_people_are_slack_mentions_and_alarms_are_named(actor, shows):
    assert render.mention(actor) == shows


def test_a_date_token_carries_epoch_seconds_a_format_and_a_utc_fallback():
    assert render.date_token(T0 + 999) == "<!date^1795000000^{date_short_pretty} {time}|2026-11-18 11:06 UTC>"
    assert render.date_token(T0, "{time_secs}") == "<!date^1795000000^{time_secs}|2026-11-18 11:06 UTC>"


def test_every_time_a_message_shows_is_a_slack_date_token():
    ex = execution(timeline=(event(at_ms=T0 + 7_000, actor="U0ACMELEAD"),))
    parent = shown(render.parent_message(ex, "Throttled", "Acme", T0 + 60_000))
    assert f"started by <@U0DEVONCALL> <!date^{T0 // 1000}^{{date_short_pretty}} {{time}}|" in parent
    reply = shown(render.timeline_reply(ex, ex.timeline[0]))
    assert f"by <@U0ACMELEAD> <!date^{(T0 + 7_000) // 1000}^{{time_secs}}|" in reply
    timeline = shown(render.timeline_text(ex))
    assert f"<!date^{(T0 + 7_000) // 1000}^{{time_secs}}|" in timeline
    for text in (parent, reply, timeline):
        for token in DATE_TOKEN.finditer(text):
            assert token.group(3).endswith(" UTC")
        assert "1970" not in text


@pytest.mark.parametrize(
    ("seconds", "reads"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (45, "45s"),
        (59.4, "59s"),
        (60, "1m 00s"),
        (65, "1m 05s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (3_661, "1h 01m"),
        (86_399, "23h 59m"),
        (86_400, "1d 0h"),
        (90_061, "1d 1h"),
        (-5, "0s"),
    ],
)
def test_durations_read_like_a_person_wrote_them(seconds, reads):
    assert format_duration(seconds) == reads


@pytest.mark.parametrize("kind", [EventKind.STEP_FINISHED, EventKind.STEP_FAILED])
def test_a_finished_or_failed_step_shows_how_long_it_took(kind):
    reply = render.timeline_reply(execution(), event(kind, duration_ms=65_000), None, "Detect")
    assert reply.blocks[0]["text"]["text"].endswith("_(1m 05s)_")


def test_a_started_step_shows_no_duration():
    reply = render.timeline_reply(execution(), event(EventKind.STEP_STARTED, duration_ms=65_000))
    assert "1m 05s" not in shown(reply)


def test_the_parent_message_shows_elapsed_time_progress_and_sla_left():
    ex = execution(
        steps={"a": StepRecord("a", "succeeded", 1, T0, T0), "b": StepRecord("b", "skipped", 1, T0, T0)}
    )
    message = render.parent_message(ex, "Throttled requests", "Acme Logistics", T0 + 90 * 60_000)
    text = shown(message)
    assert "elapsed 1h 30m" in text and "2/7" in text and "▰" in text
    assert "SLA: 30m 00s left of 120 min (75% used)" in text
    assert "step 2 of 7, elapsed 1h 30m" in message.text


def test_a_finished_run_stops_its_clock_at_its_last_transition():
    ex = execution(status=Status.SUCCEEDED, updated_at_ms=T0 + 65_000)
    shown_text = shown(render.parent_message(ex, "Throttled", "Acme", T0 + 10 * 3_600_000))
    assert "took 1m 05s" in shown_text and "within the 120-min SLA" in shown_text
    assert "left" not in shown_text, "an ended run shows its duration and outcome, not SLA time left"


def test_a_breached_sla_says_by_how_much():
    text = shown(render.parent_message(execution(), "Throttled", "Acme", T0 + 130 * 60_000))
    assert ":rotating_light: SLA breached 10m 00s ago (120 min)" in text


# -- the rest of the answers ---------------------------------------------------------------------


def test_the_start_answer_names_the_new_execution_and_how_to_follow_it():
    message = render.started(execution(execution_id="rb-k3j7q2m4xa"))
    assert "execution `rb-k3j7q2m4xa`" in message.text and "/runbook status rb-k3j7q2m4xa" in message.text
    assert "drill" not in message.text.lower()


def test_every_drill_message_says_it_is_a_drill_with_its_faults_and_time_limit():
    ex = _drill(
        execution(
            status=Status.AWAITING_APPROVAL,
            approval=Approval("replay", T0, T0 + 1_800_000, "writes 300"),
        )
    )
    started = render.started(ex)
    assert started.text.startswith("Started drill of `throttle`")
    assert "[DRILL] faults throttle=30%, timeout=5% · time limit 2m 00s" in started.text
    parent = render.parent_message(ex, "Throttled requests", "Acme Logistics", T0)
    assert parent.text.startswith("[DRILL]") and "[DRILL]" in parent.blocks[0]["text"]["text"]
    reply = render.timeline_reply(ex, event(seq=1, at_ms=T0))
    assert reply.text.startswith("[DRILL]") and "[DRILL]" in reply.blocks[0]["text"]["text"]
    request = approval_request(ex)
    assert request.text.startswith("[DRILL] faults throttle=30%, timeout=5% · time limit 2m 00s")
    assert "[DRILL] faults throttle=30%" in request.blocks[0]["text"]["text"]
    decided = render.approval_decided(ex, "replay", "Replay", "writes 300", "approved", "U0ACMELEAD", T0)
    assert decided.text.startswith("[DRILL]") and "[DRILL]" in decided.blocks[0]["text"]["text"]


def test_the_timeline_answer_keeps_the_last_forty_events_and_says_so():
    events = tuple(event(seq=i, at_ms=T0 + i, summary=f"event {i}") for i in range(1, 101))
    message = render.timeline_text(execution(timeline=events))
    text = shown(message)
    assert "_(last 40 of 100 events; the channel thread has them all)_" in text
    assert "event 100" in text and "event 61" in text and "event 60\n" not in text + "\n"


def test_help_for_a_runbook_marks_the_steps_that_need_approval():
    text = shown(render.help_text(THROTTLE, CATALOG.runbooks))
    assert "`mitigate`" in text and "`replay`" in text and text.count(":raised_hand: *needs approval*") == 2


def test_the_list_answer_says_where_elsewhere_partners_may_run():
    text = shown(render.run_list(CATALOG.runbooks, CATALOG.partners, "C0ACMEOPS"))
    assert "`partner-acme`" in text and "*Elsewhere*: `partner-globex` in <#C0GLOBEXOPS>" in text


def test_timeline_summaries_never_carry_live_mentions_only_the_actor_is_one():
    reply = render.timeline_reply(
        execution(),
        event(summary="approved by <@U0ACMELEAD> for <!subteam^S0ONCALL>; <!here> & <b>", actor="U0ACMESRE"),
    )
    text = reply.blocks[0]["text"]["text"]
    assert "&lt;@U0ACMELEAD&gt;" in text and "&lt;!subteam^S0ONCALL&gt;" in text
    assert "&lt;!here&gt; &amp; &lt;b&gt;" in text
    assert "<@U0ACMESRE>" in reply.blocks[-1]["elements"][0]["text"], "the actor, from its own field"
    assert "<" not in reply.text.replace("&lt;", ""), "the notification text is escaped too"


def test_the_parent_names_the_waiting_step_by_its_title_and_the_rejecter_as_a_mention():
    ex = execution(
        status=Status.AWAITING_APPROVAL, approval=Approval("replay", T0, T0 + 1_800_000, "writes 300")
    )
    waiting = shown(render.parent_message(ex, "Throttled", "Acme", T0, {"replay": "Replay throttled writes"}))
    assert "*Replay throttled writes* needs an approver" in waiting and "`replay`" not in waiting
    rejected = execution(
        status=Status.FAILED,
        error={"code": "ApprovalRejected", "message": "rejected Replay throttled writes", "by": "U0ACMESRE"},
    )
    text = shown(render.parent_message(rejected, "Throttled", "Acme", T0))
    assert "rejected Replay throttled writes by <@U0ACMESRE>" in text and "&lt;@" not in text


def test_long_answers_are_cut_at_a_word_never_inside_a_word_or_an_entity():
    message = render.refusal("word " * 700 + "&lt;tail&gt;")
    assert message.text.endswith("word…") and len(message.text) <= 3000
    assert render._clip("aaaaa" + "&amp;" * 3, 12) == "aaaaa&amp;…", "never half an entity"


# -- quorum, reasons and comments, the reminder and the dialog -------------------------------------


def pending(**changes: Any) -> Approval:
    from bot.store.model import Vote

    base = Approval(
        "replay",
        T0,
        T0 + 1_800_000,
        "writes 300 missed writes",
        required=2,
        version=5,
        votes=(Vote("U0ACMELEAD", T0 + 1000, "looks right <!channel> *bold*"),),
    )
    return dataclasses.replace(base, **changes)


def test_an_approval_message_says_where_its_quorum_stands_and_who_approved():
    approval = pending()
    ex = execution(status=Status.AWAITING_APPROVAL, approval=approval, version=6)
    message = approval_request(ex, approval=approval)
    shown = json.dumps(message.blocks)
    assert "*1 of 2 approvals*" in shown and "<@U0ACMELEAD>" in shown
    assert "&lt;!channel&gt;" in shown and "<!channel>" not in shown, "a comment never pings"
    assert "(1 of 2 approvals)" in message.text and actions_of(message), "buttons until the quorum is met"
    critical = approval_request(ex, approval=pending(risk="critical"))
    assert "(critical risk)" in json.dumps(critical.blocks)
    single = approval_request(ex, approval=pending(required=1, votes=()))
    assert "approval" not in single.blocks[0]["text"]["text"].split("\n", 2)[-1], "one approver: as before"


def test_a_closed_approval_names_every_approver_or_the_rejecters_reason_escaped():
    ex = execution(status=Status.FAILED)
    rejected = pending(decision="rejected", decided_by="U0ACMESRE", reason="mid-deploy <@U0BOSS> & more")
    message = render.approval_decided(
        ex, "replay", "Replay", "writes 300", "rejected", "U0ACMESRE", T0, approval=rejected
    )
    shown = json.dumps(message.blocks)
    assert "rejected by <@U0ACMESRE>" in shown and "Reason: mid-deploy &lt;@U0BOSS&gt; &amp; more" in shown
    assert "<@U0BOSS>" not in shown
    approved = render.approval_decided(
        ex,
        "replay",
        "Replay",
        "writes 300",
        "approved",
        "U0ACMESRE",
        T0,
        approval=pending(votes=pending().votes * 2),
    )
    assert "*2 of 2 approvals*" in json.dumps(approved.blocks)


def test_the_reminder_mentions_every_approver_and_the_expiry():
    ex = execution(status=Status.AWAITING_APPROVAL)
    reminder = event(
        EventKind.APPROVAL_REMINDER,
        summary="still waiting for approval (0 of 2 approvals); it expires in 15 min",
        step_id="replay",
        figures={"expires_at_ms": T0 + 1_800_000},
    )
    message = render.approval_reminder(
        ex, reminder, "Replay throttled writes", ("U0ACMELEAD", "S0ACMEONCALL")
    )
    shown = json.dumps(message.blocks)
    assert "<@U0ACMELEAD>" in shown and "<!subteam^S0ACMEONCALL>" in shown
    assert f"<!date^{(T0 + 1_800_000) // 1000}^" in shown and "Reminder" in message.text


@pytest.mark.parametrize("approve", [True, False])
def test_the_decision_dialog_is_a_modal_slack_opens(approve):
    from bot.local.slack_api import _invalid_view

    ex = execution(status=Status.AWAITING_APPROVAL, approval=pending(effect="x" * 5000), drill=True)
    view = render.decision_dialog(ex, '{"execution_id":"rb-k3j7q2m4xa"}', "Replay " * 40, approve=approve)
    assert _invalid_view(view) == []
    assert view["callback_id"] == render.DECISION_DIALOG
    (field,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert field["block_id"] == field["element"]["action_id"] == render.NOTE_BLOCK
    assert field["element"]["max_length"] == render.NOTE_MAX_LENGTH
    assert view["submit"]["text"] == ("Approve" if approve else "Reject")
    assert _invalid_view(render.dialog_refused("this approval expired at <!date^1^{time}|x>")) == []


def test_the_parent_says_how_many_approvals_a_waiting_step_has():
    ex = execution(status=Status.AWAITING_APPROVAL, approval=pending())
    message = render.parent_message(
        ex, "Throttle", "Acme", T0 + 60_000, {"replay": "Replay throttled writes"}
    )
    assert "needs an approver (1 of 2 approvals)" in json.dumps(message.blocks)


def test_a_guard_pause_asks_to_resume_or_abort_everywhere_it_shows():
    guard = pending(
        kind="guard", required=1, votes=(), effect="Replay paused: guard alarm acme-x is in ALARM"
    )
    ex = execution(status=Status.AWAITING_APPROVAL, approval=guard)
    message = approval_request(ex, approval=guard, effect=guard.effect)
    assert message.text.startswith("Paused by a guard alarm, resume or abort: Replay throttled writes")
    (actions,) = actions_of(message)
    assert [e["text"]["text"] for e in actions["elements"]] == ["Resume", "Resume with comment", "Abort"]
    assert actions["elements"][0]["confirm"]["title"]["text"] == "Resume this step?"
    assert "Paused by a guard alarm" in json.dumps(message.blocks)
    parent = render.parent_message(ex, "Replay", "Acme", T0 + 60_000, {"replay": "Replay throttled writes"})
    assert "paused by a guard alarm: resume or abort?" in json.dumps(parent.blocks)
    dialog = render.decision_dialog(ex, "{}", "Replay throttled writes", approve=False)
    assert (dialog["title"]["text"], dialog["submit"]["text"]) == ("Abort this step", "Abort")
    comment = render.decision_dialog(ex, "{}", "Replay throttled writes", approve=True)
    assert (comment["title"]["text"], comment["submit"]["text"]) == ("Resume with comment", "Resume")
    decided = render.approval_decided(
        ex, "replay", "Replay throttled writes", guard.effect, "approved", "U0ACMESRE", T0, guard
    )
    assert "resumed by" in decided.text
    # An ordinary approval keeps its words.
    (plain,) = actions_of(approval_request())
    assert [e["text"]["text"] for e in plain["elements"]] == ["Approve", "Approve with comment", "Reject"]
