"""The local Slack refuses what Slack refuses: scopes, membership, Block Kit, length, rate limits."""

from __future__ import annotations

import time
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.local.slack_api import ARCHIVED_CHANNEL, OUTSIDE_CHANNEL, SlackStandIn

TOKEN = "xoxb-test"
ACME = "C0ACMEOPS"


@pytest.fixture
def slack():
    stand_in = SlackStandIn(token=TOKEN, usergroups={"S0ONCALL": ["U0A"]})
    stand_in.start()
    yield stand_in
    stand_in.stop()


def raw(slack: SlackStandIn) -> WebClient:
    """A client that never retries, to see Slack's first answer."""
    return WebClient(token=TOKEN, base_url=slack.base_url, retry_handlers=[])


def refusal(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as refused:
        call(**kwargs)
    return {
        "status": refused.value.response.status_code,
        "headers": refused.value.response.headers,
        **refused.value.response.data,
    }


def test_a_method_outside_the_manifests_scopes_answers_missing_scope_with_needed_and_provided():
    slack = SlackStandIn(token=TOKEN, scopes=("commands", "chat:write"))
    slack.start()
    try:
        answer = refusal(raw(slack).conversations_history, channel=ACME)
    finally:
        slack.stop()
    assert answer["error"] == "missing_scope"
    assert answer["needed"] == "channels:history" and answer["provided"] == "commands,chat:write"


def test_history_of_a_private_channel_needs_groups_history():
    slack = SlackStandIn(token=TOKEN, scopes=("chat:write", "channels:history"), member_of=["G0PRIVATE"])
    slack.start()
    try:
        answer = refusal(raw(slack).conversations_history, channel="G0PRIVATE")
    finally:
        slack.stop()
    assert (answer["error"], answer["needed"]) == ("missing_scope", "groups:history")


def test_the_bot_posts_only_where_it_is_a_member(slack):
    client = raw(slack)
    assert client.chat_postMessage(channel=ACME, text="hello")["ok"]
    assert client.chat_postMessage(channel="C0GLOBEXOPS", text="hello")["ok"]
    assert refusal(client.chat_postMessage, channel=OUTSIDE_CHANNEL, text="hi")["error"] == "not_in_channel"
    assert refusal(client.chat_postMessage, channel="C0NOSUCH", text="hi")["error"] == "channel_not_found"
    assert refusal(client.chat_postMessage, channel=ARCHIVED_CHANNEL, text="hi")["error"] == "is_archived"
    slack.invite(OUTSIDE_CHANNEL)
    assert client.chat_postMessage(channel=OUTSIDE_CHANNEL, text="hello")["ok"]


def test_blocks_beyond_slacks_limits_are_invalid_blocks(slack):
    client = raw(slack)
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}
    too_many = refusal(client.chat_postMessage, channel=ACME, text="t", blocks=[section] * 51)
    assert too_many["error"] == "invalid_blocks" and too_many["errors"]
    long_section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    assert refusal(client.chat_postMessage, channel=ACME, text="t", blocks=[long_section])["error"] == (
        "invalid_blocks"
    )
    unknown = refusal(client.chat_update, channel=ACME, ts="1.000001", text="t", blocks=[{"type": "marquee"}])
    assert unknown["error"] == "invalid_blocks"
    assert client.chat_postMessage(channel=ACME, text="t", blocks=[section] * 50)["ok"]
    assert slack.messages(ACME)[-1]["blocks"] == [section] * 50


def test_text_over_40000_characters_is_msg_too_long(slack):
    client = raw(slack)
    assert refusal(client.chat_postMessage, channel=ACME, text="x" * 40_001)["error"] == "msg_too_long"
    assert client.chat_postMessage(channel=ACME, text="x" * 40_000)["ok"]


def test_tier_2_allows_about_20_calls_a_minute_then_429_with_retry_after():
    slack = SlackStandIn(token=TOKEN, usergroups={"S0ONCALL": ["U0A"]}, time_scale=0.1)
    slack.start()
    try:
        client = raw(slack)
        for _ in range(20):
            assert client.usergroups_users_list(usergroup="S0ONCALL")["ok"]
        limited = refusal(client.usergroups_users_list, usergroup="S0ONCALL")
        wait = float(limited["headers"]["Retry-After"])
        assert limited["status"] == 429 and limited["error"] == "ratelimited"
        assert 0 < wait <= 0.3 + 0.001  # at most 3 s of Slack's minute, at 1/10 of real time
        time.sleep(wait)
        assert client.usergroups_users_list(usergroup="S0ONCALL")["ok"]
    finally:
        slack.stop()


def test_posts_are_limited_per_channel_to_about_one_a_second_after_a_short_burst():
    slack = SlackStandIn(token=TOKEN, time_scale=1.0)
    slack.start()
    try:
        client = raw(slack)
        answers = []
        for i in range(8):
            try:
                answers.append(client.chat_postMessage(channel=ACME, text=f"m{i}").status_code)
            except SlackApiError as limited:
                answers.append(limited.response.status_code)
                assert limited.response.headers["Retry-After"] == "1"
        assert answers[:4] == [200] * 4 and 429 in answers[4:]
        assert client.chat_postMessage(channel="C0GLOBEXOPS", text="another channel")["ok"]
    finally:
        slack.stop()


def test_history_outside_the_marketplace_gives_15_items_and_one_call_a_minute(slack):
    for i in range(40):
        slack.say(ACME, f"chatter {i}")
    client = raw(slack)
    page = client.conversations_history(channel=ACME, limit=200)
    assert len(page["messages"]) == 15 and page["has_more"]
    assert refusal(client.conversations_history, channel=ACME)["status"] == 429


def test_the_fault_switch_makes_any_method_answer_any_slack_error(slack):
    client = raw(slack)
    slack.fail("chat.update", "token_revoked")
    assert refusal(client.chat_update, channel=ACME, ts="1.0", text="t")["error"] == "token_revoked"
    slack.fail("*", "account_inactive", times=2)
    assert refusal(client.usergroups_users_list, usergroup="S0ONCALL")["error"] == "account_inactive"
    assert refusal(client.chat_postMessage, channel=ACME, text="t")["error"] == "account_inactive"
    assert client.chat_postMessage(channel=ACME, text="t")["ok"]
    with pytest.raises(ValueError, match="never answers"):
        slack.fail("usergroups.users.list", "not_in_channel")


def test_a_lost_answer_fault_posts_and_then_answers_500(slack):
    slack.fail("chat.postMessage", status=500, lost=True)
    answer = refusal(raw(slack).chat_postMessage, channel=ACME, text="landed")
    assert answer["status"] == 500
    assert [m["text"] for m in slack.messages(ACME)] == ["landed"]


MODAL = {
    "type": "modal",
    "callback_id": "approval_decision",
    "title": {"type": "plain_text", "text": "Reject this step"},
    "submit": {"type": "plain_text", "text": "Reject"},
    "private_metadata": '{"execution_id": "rb-x"}',
    "blocks": [
        {
            "type": "input",
            "block_id": "note",
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {"type": "plain_text_input", "action_id": "note", "multiline": True},
        }
    ],
}


def test_views_open_exchanges_a_fresh_trigger_once_and_holds_the_modal_open(slack):
    trigger = slack.trigger("U0A")
    opened = raw(slack).views_open(trigger_id=trigger, view=MODAL)
    assert (
        opened["view"]["id"].startswith("V")
        and opened["view"]["private_metadata"] == MODAL["private_metadata"]
    )
    (view,) = slack.open_views("U0A")
    assert view["callback_id"] == "approval_decision" and view["hash"]
    again = refusal(raw(slack).views_open, trigger_id=trigger, view=MODAL)
    assert again["error"] == "exchanged_trigger_id"


def test_views_open_refuses_an_expired_an_unknown_and_a_malformed_trigger(slack):
    stale = slack.trigger("U0A", age=3.5)
    assert refusal(raw(slack).views_open, trigger_id=stale, view=MODAL)["error"] == "expired_trigger_id"
    unknown = "1795000000.123456789.abcdef0123"
    assert refusal(raw(slack).views_open, trigger_id=unknown, view=MODAL)["error"] == "invalid_trigger_id"
    assert (
        refusal(raw(slack).views_open, trigger_id="not-a-trigger", view=MODAL)["error"]
        == "invalid_trigger_id"
    )
    assert not slack.open_views()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"title": {"type": "plain_text", "text": "A title far longer than Slack allows"}},
            "/view/title/text",
        ),
        ({"submit": None}, "requires a submit button"),
        ({"blocks": []}, "between 1 and 100 blocks"),
        ({"blocks": [MODAL["blocks"][0]] * 101}, "between 1 and 100 blocks"),
        ({"private_metadata": "x" * 3001}, "/view/private_metadata"),
        ({"type": "home"}, "must be modal"),
    ],
)
def test_views_open_refuses_a_view_slack_would_refuse_with_invalid_arguments(slack, change, says):
    view = {k: v for k, v in {**MODAL, **change}.items() if v is not None}
    answer = refusal(raw(slack).views_open, trigger_id=slack.trigger("U0A"), view=view)
    assert answer["error"] == "invalid_arguments"
    assert any(says in m for m in answer["response_metadata"]["messages"]), answer


def test_a_view_over_250_kb_is_too_large(slack):
    big = {**MODAL, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 2900}}] * 90}
    answer = refusal(raw(slack).views_open, trigger_id=slack.trigger("U0A"), view=big)
    assert answer["error"] == "view_too_large"


def test_a_submission_has_slacks_shape_and_the_apps_answer_closes_updates_or_annotates_the_modal(slack):
    raw(slack).views_open(trigger_id=slack.trigger("U0A"), view=MODAL)
    (view,) = slack.open_views("U0A")
    payload = slack.submission(view["id"], {"note": "mid-deploy"})
    assert payload["type"] == "view_submission" and payload["user"]["id"] == "U0A"
    assert payload["view"]["state"]["values"] == {
        "note": {"note": {"type": "plain_text_input", "value": "mid-deploy"}}
    }
    assert payload["view"]["private_metadata"] == MODAL["private_metadata"]
    errors = slack.answer_submission(view["id"], {"response_action": "errors", "errors": {"note": "say why"}})
    assert errors["errors"] == {"note": "say why"} and slack.open_views("U0A")
    updated = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Nothing changed"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "expired"}}],
    }
    assert (
        slack.answer_submission(view["id"], {"response_action": "update", "view": updated})["title"]["text"]
        == "Nothing changed"
    )
    assert slack.answer_submission(view["id"], None) == {} and not slack.open_views("U0A")
