"""The publisher under crashes: a post that landed before the crash is found again, never posted twice."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bot.catalog import load_catalog
from bot.local.slack_api import SlackStandIn
from bot.slack.client import slack_client
from bot.slack.publisher import Publisher
from bot.store.executions import dynamodb_client
from bot.store.model import EventKind, Execution, Status, TimelineEvent
from bot.store.slack_posts import PostsStore
from tests.unit.slack.test_publisher_errors import publish_all

CHANNEL = "C0ACMEOPS"


class Crash(BaseException):
    pass


class CrashAfterPost:
    """A Slack client whose n-th chat.postMessage lands and then the sandbox dies."""

    def __init__(self, client: Any, crash_on: int) -> None:
        self.client, self.crash_on, self.posts = client, crash_on, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def chat_postMessage(self, **kwargs: Any) -> Any:
        answer = self.client.chat_postMessage(**kwargs)
        self.posts += 1
        if self.posts == self.crash_on:
            raise Crash
        return answer


@pytest.fixture
def slack(monkeypatch):
    stand_in = SlackStandIn(token="xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", stand_in.start())
    monkeypatch.setenv("SLACK_RETRY_BACKOFF_SECONDS", "0.01")
    yield stand_in
    stand_in.stop()


def run(events: int) -> Execution:
    now = int(time.time() * 1000)
    timeline = tuple(
        TimelineEvent(
            seq, now + seq, EventKind.STEP_FINISHED if seq > 1 else EventKind.RUN_STARTED, f"event {seq}"
        )
        for seq in range(1, events + 1)
    )
    return Execution(
        execution_id="rb-crashtestx",
        runbook="throttle",
        runbook_version="v1",
        partner="partner-acme",
        status=Status.RUNNING,
        version=events,
        params={},
        requested_by="U0DEVONCALL",
        channel=CHANNEL,
        created_at_ms=now,
        updated_at_ms=now,
        total_steps=7,
        timeline=timeline,
    )


def publisher(client: Any, table: str) -> Publisher:
    return Publisher(client, PostsStore(dynamodb_client(), table), load_catalog)


def assert_once_in_order(slack: SlackStandIn, ex: Execution) -> None:
    parents = [
        m
        for m in slack.messages(CHANNEL)
        if (m.get("metadata") or {}).get("event_payload", {}).get("seq") == 0
    ]
    assert len(parents) == 1
    replies = slack.thread(CHANNEL, parents[0]["ts"])[1:]
    assert [r["metadata"]["event_payload"]["seq"] for r in replies] == [e.seq for e in ex.timeline]


@pytest.mark.parametrize("crash_on", [1, 2, 4])
def test_a_crash_right_after_a_post_never_doubles_it(executions_table, slack, crash_on):
    ex = run(4)
    client = slack_client("xoxb-test")
    with pytest.raises(Crash):
        publish_all(publisher(CrashAfterPost(client, crash_on), executions_table), ex)
    publish_all(publisher(client, executions_table), ex)
    assert_once_in_order(slack, ex)


def test_the_parent_is_found_again_with_one_short_lookup_in_a_busy_channel(executions_table, slack):
    ex = run(2)
    client = slack_client("xoxb-test")
    now = time.time()
    for i in range(450):  # people talked before the run began
        slack.say(CHANNEL, f"chatter {i}", at=now - 900 + i)
    with pytest.raises(Crash):
        publish_all(publisher(CrashAfterPost(client, 1), executions_table), ex)
    for i in range(450):  # and go on talking before the publisher comes back
        slack.say(CHANNEL, f"chatter {i}", at=now + 120 + i)
    result = publish_all(publisher(client, executions_table), ex)
    assert (result.posted, result.recovered, result.lookups) == (2, 1, 1)
    lookups = [c for c in slack.calls if c.method.startswith("conversations.")]
    assert [c.method for c in lookups] == ["conversations.history"]
    assert int(lookups[0].args["limit"]) <= 15
    assert_once_in_order(slack, ex)


def test_a_reply_posted_before_a_crash_is_found_with_one_short_lookup(executions_table, slack):
    ex = run(6)
    client = slack_client("xoxb-test")
    with pytest.raises(Crash):
        publish_all(publisher(CrashAfterPost(client, 4), executions_table), ex)
    result = publish_all(publisher(client, executions_table), ex)
    assert (result.posted, result.recovered, result.lookups) == (3, 1, 1)
    lookups = [c for c in slack.calls if c.method.startswith("conversations.")]
    assert [c.method for c in lookups] == ["conversations.replies"]
    assert int(lookups[0].args["limit"]) <= 15
    assert_once_in_order(slack, ex)
