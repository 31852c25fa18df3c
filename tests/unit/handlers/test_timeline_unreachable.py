"""The timeline function on a real stream record for a channel the bot is not in: the record
succeeds (the stream's lane moves on) and the requester reads how to fix it."""

from __future__ import annotations

import copy
import time

import pytest

from bot.handlers import timeline
from bot.local.lambda_context import LambdaContext
from bot.local.slack_api import OUTSIDE_CHANNEL, SlackStandIn
from bot.local.slack_requests import DEV_BOT_TOKEN, DEV_SIGNING_SECRET
from tests.events import load_event


@pytest.fixture
def slack(executions_table, monkeypatch):
    from bot.local.pipeline import fresh_sandboxes

    stand_in = SlackStandIn(DEV_BOT_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", stand_in.start())
    monkeypatch.setenv("SLACK_SIGNING_SECRET", DEV_SIGNING_SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEV_BOT_TOKEN)
    fresh_sandboxes()
    yield stand_in
    fresh_sandboxes()
    stand_in.stop()


def record_in(channel: str, response_url: str = "") -> dict:
    event = copy.deepcopy(load_event("stream-insert"))
    image = event["Records"][0]["dynamodb"]["NewImage"]
    image["channel"] = {"S": channel}
    image["created_at_ms"] = {"N": str(int(time.time() * 1000) - 60_000)}  # the command came a minute ago
    if response_url:
        image["response_url"] = {"S": response_url}
    return event


def test_a_record_for_a_channel_without_the_bot_succeeds_and_the_requester_is_told_through_response_url(
    slack,
):
    event = record_in(OUTSIDE_CHANNEL, slack.response_url("commands/T0LOCAL/1"))
    answer = timeline.handler(event, LambdaContext("TimelineFunction", 60))
    assert answer == {"batchItemFailures": []}
    (told,) = slack.responses
    assert f"/invite @runbook-bot` in <#{OUTSIDE_CHANNEL}>" in told["text"]
    assert slack.messages(OUTSIDE_CHANNEL) == []


def test_without_a_response_url_the_requester_gets_a_dm(slack):
    event = record_in(OUTSIDE_CHANNEL)
    requester = event["Records"][0]["dynamodb"]["NewImage"]["requested_by"]["S"]
    assert timeline.handler(event, LambdaContext("TimelineFunction", 60)) == {"batchItemFailures": []}
    (dm,) = slack.dms(requester)
    assert "not_in_channel" in dm["text"]
