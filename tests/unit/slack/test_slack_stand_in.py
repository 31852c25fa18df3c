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
