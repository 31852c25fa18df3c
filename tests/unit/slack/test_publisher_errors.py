"""The publisher by kind of Slack error: a lost answer never doubles a post; an error no retry can fix
never blocks the stream, is told to the requester once with its fix, and the timeline catches up."""

from __future__ import annotations

import dataclasses
import time

import pytest

from bot.catalog import load_catalog
from bot.local.slack_api import ARCHIVED_CHANNEL, OUTSIDE_CHANNEL, SlackStandIn
from bot.slack.client import slack_client
from bot.slack.publisher import Publisher, PublishResult
from bot.store.executions import dynamodb_client
from bot.store.model import EventKind, Execution, Status, TimelineEvent
from bot.store.slack_posts import PostsStore

ACME = "C0ACMEOPS"
REQUESTER = "U0DEVONCALL"


@pytest.fixture
def slack(monkeypatch):
    stand_in = SlackStandIn(token="xoxb-test")
    monkeypatch.setenv("SLACK_API_URL", stand_in.start())
    monkeypatch.setenv("SLACK_RETRY_BACKOFF_SECONDS", "0.01")
    yield stand_in
    stand_in.stop()


@pytest.fixture
def publisher(executions_table, slack):
    return Publisher(slack_client("xoxb-test"), PostsStore(dynamodb_client(), executions_table), load_catalog)


def run(events: int, channel: str = ACME, *, started_ms: int | None = None) -> Execution:
    now = int(time.time() * 1000) if started_ms is None else started_ms
    timeline = tuple(
        TimelineEvent(
            seq, now + seq, EventKind.STEP_FINISHED if seq > 1 else EventKind.RUN_STARTED, f"event {seq}"
        )
        for seq in range(1, events + 1)
    )
    return Execution(
        execution_id="rb-slackerrsx",
        runbook="throttle",
        runbook_version="v1",
        partner="partner-acme",
        status=Status.RUNNING,
        version=events,
        params={},
        requested_by=REQUESTER,
        channel=channel,
        created_at_ms=now,
        updated_at_ms=now + events,
        total_steps=7,
        timeline=timeline,
    )


def thread_seqs(slack: SlackStandIn, ex: Execution) -> tuple[int, list[int]]:
    """How many parents the run has in its channel, and the seqs of its thread in order."""
    parents = [
        m
        for m in slack.messages(ex.channel)
        if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == ex.execution_id
    ]
    if not parents:
        return 0, []
    replies = slack.thread(ex.channel, parents[0]["ts"])[1:]
    return len(parents), [r["metadata"]["event_payload"]["seq"] for r in replies]


def publish_all(
    publisher: Publisher, ex: Execution, response_url: str = "", turns: int = 40
) -> PublishResult:
    """publish() until nothing of the run waits for its turn in the channel, as the sweeper's
    nudges would (each call posts at most a turn's worth); the figures are summed over the calls."""
    posted = recovered = lookups = 0
    for _ in range(turns):
        result = publisher.publish(ex, response_url)
        posted, recovered = posted + result.posted, recovered + result.recovered
        lookups += result.lookups
        if not result.paced:
            return dataclasses.replace(result, posted=posted, recovered=recovered, lookups=lookups)
        turn = publisher.posts.get(ex.execution_id).paced_until_ms / 1000
        time.sleep(max(0.0, turn - publisher.clock()))
    raise AssertionError(f"{ex.execution_id} still waits for its turn after {turns} publishes")


# -- a lost answer --------------------------------------------------------------------------------


@pytest.mark.parametrize("drop", [False, True], ids=["500 after posting", "connection dropped after posting"])
@pytest.mark.parametrize("nth_post", [1, 3], ids=["parent", "reply"])
def test_a_post_whose_answer_was_lost_appears_once(slack, publisher, drop, nth_post):
    ex = run(4)
    slack.fail("chat.postMessage", status=500, disconnect=drop, lost=True, skip=nth_post - 1)
    result = publish_all(publisher, ex)
    assert thread_seqs(slack, ex) == (1, [1, 2, 3, 4])
    assert result.recovered == 1
    sent = [c for c in slack.calls if c.method == "chat.postMessage" and c.status != 429]
    assert len(sent) == 5  # the parent and four replies: nothing sent twice


def test_a_post_refused_with_a_5xx_before_landing_is_sent_again_after_looking(slack, publisher):
    ex = run(3)
    slack.fail("chat.postMessage", status=503)  # answered before posting anything
    result = publish_all(publisher, ex)
    assert thread_seqs(slack, ex) == (1, [1, 2, 3])
    assert result.recovered == 0
    assert [c.method for c in slack.calls].count("conversations.history") == 1


def test_a_fifth_of_posts_answered_500_after_posting_never_doubles_the_thread(slack, publisher):
    ex = run(20)
    for _ in range(4):
        slack.fail("chat.postMessage", status=500, lost=True, skip=4)
    # Slack paces lookups (1 a minute, run faster here) and posts: a nudge resumes each time.
    result = publish_all(publisher, ex)
    assert thread_seqs(slack, ex) == (1, list(range(1, 21)))
    assert result.recovered == 4
    lookups = [c for c in slack.calls if c.method.startswith("conversations.")]
    assert all(int(c.args["limit"]) <= 15 for c in lookups)


# -- errors no retry can fix ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "code", "fix"),
    [
        (OUTSIDE_CHANNEL, "not_in_channel", f"`/invite @runbook-bot` in <#{OUTSIDE_CHANNEL}>"),
        ("C0DELETED", "channel_not_found", "invite @runbook-bot to <#C0DELETED>"),
        (ARCHIVED_CHANNEL, "is_archived", "is archived"),
    ],
)
def test_a_channel_the_bot_cannot_post_in_never_blocks_and_the_requester_is_told_once(
    slack, publisher, channel, code, fix
):
    ex = run(2, channel)
    result = publisher.publish(ex)  # returns: the stream's lane moves on
    assert result.unreachable == code
    posts = publisher.posts.get(ex.execution_id)
    assert (posts.unreachable, posts.requester_told) == (code, True)
    publisher.publish(dataclasses.replace(run(3, channel), created_at_ms=ex.created_at_ms))
    (dm,) = slack.dms(REQUESTER)
    assert fix in dm["text"] and ex.execution_id in dm["text"] and code in dm["text"]


def test_a_missing_scope_names_the_scope_to_add(slack, publisher):
    slack.fail("chat.postMessage", "missing_scope", channel=ACME, times=None)
    ex = run(1)
    assert publisher.publish(ex).unreachable == "missing_scope"
    (dm,) = slack.dms(REQUESTER)
    assert "`chat:write`" in dm["text"] and "reinstall" in dm["text"]


@pytest.mark.parametrize("code", ["token_revoked", "account_inactive"])
def test_a_dead_token_is_told_through_the_runs_response_url(slack, publisher, code):
    slack.fail("*", code, times=None)
    ex = run(2)
    result = publisher.publish(ex, response_url=slack.response_url("commands/T0LOCAL/1"))
    assert result.unreachable == code
    (told,) = slack.responses
    assert told["response_type"] == "ephemeral" and "reinstall the app" in told["text"]
    publisher.publish(ex, response_url=slack.response_url("commands/T0LOCAL/1"))
    assert len(slack.responses) == 1


def test_a_response_url_older_than_30_minutes_is_not_used(slack, publisher):
    ex = run(1, OUTSIDE_CHANNEL, started_ms=int(time.time() * 1000) - 31 * 60_000)
    publisher.publish(ex, response_url=slack.response_url("commands/T0LOCAL/1"))
    assert slack.responses == []
    assert len(slack.dms(REQUESTER)) == 1


def test_a_response_url_that_is_not_slacks_is_never_called(slack, publisher):
    called = []
    publisher.respond = lambda url, body: called.append(url)
    publisher.publish(run(1, OUTSIDE_CHANNEL), response_url="https://example.com/steal")
    assert called == [] and len(slack.dms(REQUESTER)) == 1


def test_the_timeline_catches_up_in_order_once_the_bot_is_invited(slack, publisher):
    ex = run(2, OUTSIDE_CHANNEL)
    assert publisher.publish(ex).unreachable == "not_in_channel"
    slack.invite(OUTSIDE_CHANNEL)
    later = dataclasses.replace(run(5, OUTSIDE_CHANNEL), created_at_ms=ex.created_at_ms)
    result = publish_all(publisher, later)
    assert result.unreachable == "" and result.posted == 6
    assert thread_seqs(slack, later) == (1, [1, 2, 3, 4, 5])
    assert publisher.posts.get(ex.execution_id).unreachable == ""


def test_a_bot_removed_mid_run_stops_posting_and_catches_up_when_invited_back(slack, publisher):
    ex = run(2)
    publisher.publish(ex)
    slack.remove(ACME)
    assert publisher.publish(dataclasses.replace(run(4), created_at_ms=ex.created_at_ms)).unreachable
    slack.invite(ACME)
    publish_all(publisher, dataclasses.replace(run(6), created_at_ms=ex.created_at_ms))
    assert thread_seqs(slack, ex) == (1, [1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize("code", ["invalid_blocks", "msg_too_long"])
def test_a_message_slack_refuses_is_sent_as_its_text_alone_and_the_thread_goes_on(slack, publisher, code):
    ex = run(3)
    slack.fail("chat.postMessage", code, skip=2)  # the parent and the first reply go through
    result = publish_all(publisher, ex)
    assert result.unreachable == ""
    assert thread_seqs(slack, ex) == (1, [1, 2, 3])
    parent = slack.messages(ACME)[0]
    second = slack.thread(ACME, parent["ts"])[2]
    assert "blocks" not in second and second["text"]


def test_a_recovery_without_the_history_scope_is_reported_instead_of_failing_forever(
    executions_table, monkeypatch
):
    slack = SlackStandIn(token="xoxb-test", scopes=("commands", "chat:write", "im:write"))
    monkeypatch.setenv("SLACK_API_URL", slack.start())
    try:
        publisher = Publisher(
            slack_client("xoxb-test"), PostsStore(dynamodb_client(), executions_table), load_catalog
        )
        slack.fail("chat.postMessage", status=500, lost=True)  # the parent lands; its answer is lost
        result = publisher.publish(run(2))
        assert result.unreachable == "missing_scope"
        (dm,) = slack.dms(REQUESTER)
        assert "`channels:history`" in dm["text"]
    finally:
        slack.stop()


def test_runbook_in_a_channel_the_bot_cannot_post_in_says_how_to_invite_it(
    slack, publisher, executions_table
):
    import boto3

    from bot.slack.commands import CommandService, Invocation
    from bot.store.executions import ExecutionStore

    slack.remove(ACME)  # someone removed the bot from the partner's channel
    publisher.publish(run(2))
    store = ExecutionStore(boto3.client("dynamodb"), executions_table)
    assert store.channel_unreachable(ACME) == "not_in_channel"
    service = CommandService(store, load_catalog, lambda: int(time.time() * 1000))
    answer = service.answer(Invocation("consistency partner-acme", "U0X", ACME, "T0", "t1")).text
    assert "execution `" in answer and f"`/invite @runbook-bot` in <#{ACME}>" in answer
    slack.invite(ACME)
    publisher.publish(run(3))  # invited again: the run's next change catches up and the warning goes
    assert store.channel_unreachable(ACME) == ""
    assert (
        "/invite" not in service.answer(Invocation("consistency partner-acme", "U0X", ACME, "T0", "t2")).text
    )
