"""The one Slack client: transient errors retried within the time it is given; posts never repeated
after a lost answer; permanent errors recognised."""

from __future__ import annotations

import time

import pytest
from slack_sdk.errors import SlackApiError

from bot.local.slack_api import OUTSIDE_CHANNEL, SlackStandIn
from bot.slack.client import RetryBudget, answer_lost, error_code, is_permanent, slack_client

ACME = "C0ACMEOPS"


@pytest.fixture
def slack(monkeypatch):
    stand_in = SlackStandIn(token="xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", stand_in.start())
    monkeypatch.setenv("SLACK_RETRY_BACKOFF_SECONDS", "0.01")
    yield stand_in
    stand_in.stop()


def test_a_429_is_retried_after_the_retry_after_slack_sends(slack):
    slack.fail("chat.update", status=429, retry_after=10)  # Slack's seconds, run at the stand-in's time scale
    posted = slack_client("xoxb-test").chat_postMessage(channel=ACME, text="before")
    started = time.monotonic()
    slack_client("xoxb-test").chat_update(channel=ACME, ts=posted["ts"], text="after")
    assert time.monotonic() - started >= 10 * slack.time_scale
    assert slack.messages(ACME)[0]["text"] == "after"


def test_a_429_is_not_waited_for_past_the_budget(slack):
    slack.fail("chat.update", status=429, retry_after=600)
    started = time.monotonic()
    with pytest.raises(SlackApiError) as limited:
        slack_client("xoxb-test", budget=RetryBudget(5)).chat_update(channel=ACME, ts="1.0", text="t")
    assert limited.value.response.status_code == 429 and time.monotonic() - started < 2


def test_a_read_answered_5xx_is_retried(slack):
    slack.fail("conversations.replies", status=503, times=2)
    posted = slack_client("xoxb-test").chat_postMessage(channel=ACME, text="parent")
    answer = slack_client("xoxb-test").conversations_replies(channel=ACME, ts=posted["ts"])
    assert answer["messages"][0]["text"] == "parent"


@pytest.mark.parametrize("drop", [False, True], ids=["500", "dropped connection"])
def test_a_post_whose_answer_was_lost_is_never_repeated_by_the_client(slack, drop):
    slack.fail("chat.postMessage", status=500, disconnect=drop, lost=True)
    with pytest.raises(Exception) as lost:
        slack_client("xoxb-test").chat_postMessage(channel=ACME, text="once")
    assert answer_lost(lost.value)
    assert [m["text"] for m in slack.messages(ACME)] == ["once"]


def test_permanent_errors_are_told_apart_from_transient_ones(slack):
    client = slack_client("xoxb-test")
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=OUTSIDE_CHANNEL, text="hi")
    assert is_permanent(refused.value) and error_code(refused.value) == "not_in_channel"
    assert not answer_lost(refused.value)
    slack.fail("chat.postMessage", status=502)
    with pytest.raises(SlackApiError) as unanswered:
        client.chat_postMessage(channel=ACME, text="hi")
    assert not is_permanent(unanswered.value) and answer_lost(unanswered.value)
