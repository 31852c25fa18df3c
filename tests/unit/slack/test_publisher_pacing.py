"""Slack allows about one post per second per channel: a busy channel's backlog waits its turn
without a stream lane sleeping through it, and the sweeper nudges the run when its turn comes."""

from __future__ import annotations

import dataclasses
import json
import time
from types import SimpleNamespace

import boto3
import pytest

from bot.catalog import load_catalog
from bot.handlers.sweeper import nudge_turns
from bot.local.slack_api import SlackStandIn
from bot.slack.client import slack_client
from bot.slack.publisher import Publisher
from bot.store import keys
from bot.store.codec import to_item
from bot.store.executions import ExecutionStore, dynamodb_client
from bot.store.model import Execution, Status
from bot.store.slack_posts import PostsStore
from tests.unit.slack.test_publisher_errors import ACME, publisher, run, thread_seqs  # noqa: F401

GLOBEX = "C0GLOBEXOPS"


@pytest.fixture
def slack(monkeypatch):
    stand_in = SlackStandIn(token="xoxb-test", time_scale=1.0)  # Slack's own clock: Retry-After 30 is 30 s
    monkeypatch.setenv("SLACK_API_URL", stand_in.start())
    monkeypatch.setenv("SLACK_RETRY_BACKOFF_SECONDS", "0.01")
    yield stand_in
    stand_in.stop()


@pytest.fixture
def fast_slack(monkeypatch):
    stand_in = SlackStandIn(token="xoxb-test", time_scale=0.02)  # Slack's limits never bind here
    monkeypatch.setenv("SLACK_API_URL", stand_in.start())
    yield stand_in
    stand_in.stop()


def _paced(executions_table: str) -> tuple[Publisher, list[float]]:
    """A publisher at Slack's own pace (a post a second per channel) on a clock the test moves."""
    clock = [float(int(time.time()))]  # whole seconds: turns in exact milliseconds
    timeline = Publisher(
        slack_client("xoxb-test"),
        PostsStore(dynamodb_client(), executions_table),
        load_catalog,
        clock=lambda: clock[0],
        posts_per_second=1.0,
    )
    return timeline, clock


def _store(timeline: Publisher) -> ExecutionStore:
    return ExecutionStore(boto3.client("dynamodb"), timeline.posts.table)


def test_a_429_queues_the_run_at_once_and_the_sweeper_nudges_it_at_its_turn(slack, executions_table):
    timeline, clock = _paced(executions_table)
    ex, other = run(6), dataclasses.replace(run(2), execution_id="rb-otherrunxx")
    store = _store(timeline)
    for item in (ex, other):
        store.client.put_item(TableName=store.table, Item=to_item(item))
    slack.fail(
        "chat.postMessage", status=429, retry_after=30, skip=1, times=None
    )  # the channel's budget is spent

    started = time.monotonic()
    result = timeline.publish(ex)
    assert time.monotonic() - started < 3, "the lane never sleeps out Slack's Retry-After"
    assert result.paced and result.rate_limited and thread_seqs(slack, ex) == (1, [])
    assert [c.status for c in slack.calls if c.method == "chat.postMessage"] == [200, 429], (
        "no retry in the lane"
    )
    posts = timeline.posts.get(ex.execution_id)
    assert posts.paced_until_ms >= clock[0] * 1000 + 30_000 and posts.retry_at_ms == posts.paced_until_ms
    assert posts.attempting_through == posts.posted_seq == 0, "a 429 posted nothing: nothing to look for"
    assert timeline.posts.pace(ACME).paced_until_ms >= clock[0] * 1000 + 30_000

    calls = len(slack.calls)
    assert timeline.publish(ex).paced and timeline.publish(other).paced
    assert len(slack.calls) == calls, "no call to Slack in that channel before its time"
    assert timeline.posts.get(other.execution_id).paced_until_ms >= posts.paced_until_ms + 3_000, (
        "a run that comes later queues after the run already waiting"
    )

    slack.clear_faults()
    clock[0] = posts.paced_until_ms / 1000 - 0.5

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    nudged = nudge_turns(store, int(clock[0] * 1000) + 2_000, lambda: clock[0], sleep)
    assert nudged == 1 and clock[0] * 1000 >= posts.paced_until_ms, "nudged at its turn, not before"
    assert (
        "nudged_at_ms"
        in store.client.get_item(
            TableName=store.table, Key={k: {"S": v} for k, v in keys.state_key(ex.execution_id).items()}
        )["Item"]
    ), "a write on the state item: a stream record for the timeline"
    for _ in range(10):  # each turn posts what the channel takes (three posts), a post a second
        if not timeline.publish(ex).paced:
            break
        clock[0] = timeline.posts.get(ex.execution_id).paced_until_ms / 1000
        time.sleep(3)  # the stand-in keeps Slack's real clock
    assert thread_seqs(slack, ex) == (1, [1, 2, 3, 4, 5, 6]), "every event once, in order"
    caught_up = timeline.posts.get(ex.execution_id)
    assert (caught_up.paced_until_ms, caught_up.retry_at_ms) == (0, 0)
    assert [d.execution_id for d in store.due(10**14)] == [other.execution_id], "only the other run waits"


def test_runs_in_one_channel_take_turns_and_another_channel_never_waits_for_them(
    fast_slack, executions_table
):
    timeline, clock = _paced(executions_table)
    busy = run(6)
    second = dataclasses.replace(run(2), execution_id="rb-secondrunx")
    quiet = dataclasses.replace(run(2, GLOBEX), execution_id="rb-quietrunxx", partner="partner-globex")
    t0 = clock[0]

    first = timeline.publish(busy)
    assert first.paced and not first.rate_limited, "six events and a parent: more than a turn: no 429"
    assert _seqs(fast_slack, busy) == [1, 2]
    assert timeline.publish(second).paced, "its turn comes after the busy run's second turn"
    assert _seqs(fast_slack, second) is None
    assert not timeline.publish(quiet).paced and _seqs(fast_slack, quiet) == [1, 2], (
        "another channel's runs are not queued behind this one's"
    )

    def turn(ex: Execution) -> float:
        return (timeline.posts.get(ex.execution_id).paced_until_ms / 1000) - t0

    assert (turn(busy), turn(second)) == (3.0, 6.0), "three posts a turn, a post a second"
    clock[0] = t0 + 3
    assert timeline.publish(busy).paced and _seqs(fast_slack, busy) == [1, 2, 3, 4, 5]
    assert turn(busy) == 9.0, "its last event queues behind the second run's turn"
    assert timeline.publish(busy).paced and timeline.publish(second).paced, "nothing before a turn"
    clock[0] = t0 + 6
    assert not timeline.publish(second).paced and _seqs(fast_slack, second) == [1, 2]
    clock[0] = t0 + 9
    assert not timeline.publish(busy).paced and _seqs(fast_slack, busy) == [1, 2, 3, 4, 5, 6]


def test_a_parent_update_waits_out_the_channels_retry_after_too(fast_slack, executions_table):
    timeline, clock = _paced(executions_table)
    ex = run(2)
    assert not timeline.publish(ex).paced
    now_ms = int(clock[0] * 1000)
    timeline.posts.take_turn(ACME, now_ms, 0, timeline.interval_ms, paced_until_ms=now_ms + 5_000)
    calls = len(fast_slack.calls)
    done = dataclasses.replace(ex, status=Status.SUCCEEDED, version=ex.version + 1)
    assert timeline.publish(done).paced and len(fast_slack.calls) == calls, "Slack said wait: no update"
    assert timeline.publish(ex).paced is False and len(fast_slack.calls) == calls, (
        "an older record with nothing to change asks Slack nothing, paced or not"
    )
    clock[0] += 5
    result = timeline.publish(done)
    assert result.parent_updated and [c.method for c in fast_slack.calls[calls:]] == ["chat.update"]


def test_a_429_to_the_parent_posts_it_later_without_a_lookup(fast_slack, executions_table):
    timeline, clock = _paced(executions_table)
    ex = run(1)
    fast_slack.fail("chat.postMessage", status=429, retry_after=1)
    assert timeline.publish(ex).rate_limited
    assert not timeline.posts.get(ex.execution_id).parent_attempted, (
        "Slack posted nothing: nothing to look for"
    )
    clock[0] += 60
    assert not timeline.publish(ex).paced and _seqs(fast_slack, ex) == [1]
    assert not [c for c in fast_slack.calls if c.method.startswith("conversations.")]


def test_a_429_to_a_lookup_holds_only_that_run_not_the_channel(fast_slack, executions_table):
    timeline, clock = _paced(executions_table)
    ex = run(3)
    fast_slack.fail("chat.postMessage", status=500, lost=True, skip=1)  # a reply lands, its answer is lost
    fast_slack.fail("conversations.replies", status=429, retry_after=60)
    result = timeline.publish(ex)
    assert result.rate_limited and _seqs(fast_slack, ex) == [1]
    assert (
        timeline.posts.get(ex.execution_id).paced_until_ms >= clock[0] * 1000 + 60_000 * fast_slack.time_scale
    )
    assert timeline.posts.pace(ACME).paced_until_ms == 0, (
        "the channel's posts go on: lookups have their own limit"
    )
    other = dataclasses.replace(run(1), execution_id="rb-otherrunxx")
    clock[0] += 3  # after the first run's turn
    assert not timeline.publish(other).paced and _seqs(fast_slack, other) == [1]


def test_a_nudge_the_publisher_has_not_acted_on_is_repeated_less_and_less_often(executions_table):
    from bot.store.executions import NUDGE_AGAIN_MAX_MS
    from bot.store.slack_posts import Posts

    store = ExecutionStore(boto3.client("dynamodb"), executions_table)
    posts = PostsStore(store.client, store.table)
    ex = run(2)
    store.client.put_item(TableName=store.table, Item=to_item(ex))
    waiting = posts.save(
        ex.execution_id, Posts(), Posts(channel=ACME, paced_until_ms=1_000, retry_at_ms=1_000)
    )
    assert waiting is not None
    due, gaps = 1_000, []
    for _ in range(7):  # the publisher lags: none of these nudges has been acted on yet
        (found,) = store.due(10**14)
        assert store.nudge(ex.execution_id, found.due_at_ms, due)
        (after,) = store.due(10**14)
        gaps.append(after.due_at_ms - due)
        due = after.due_at_ms
    assert gaps == [10_000, 20_000, 40_000, 80_000, 160_000, NUDGE_AGAIN_MAX_MS, NUDGE_AGAIN_MAX_MS]
    current = posts.get(ex.execution_id)
    assert posts.save(ex.execution_id, current, dataclasses.replace(current, retry_at_ms=due)) is not None
    (found,) = store.due(10**14)
    assert store.nudge(ex.execution_id, found.due_at_ms, due)
    (after,) = store.due(10**14)
    assert after.due_at_ms - due == 10_000, "the publisher's own write starts the count again"


def test_nudge_turns_returns_at_once_when_no_timeline_waits(executions_table):
    store = ExecutionStore(boto3.client("dynamodb"), executions_table)
    slept: list[float] = []
    assert nudge_turns(store, int(time.time() * 1000) + 50_000, time.time, slept.append) == 0
    assert slept == []


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_pace_setting_says_what_is_valid(monkeypatch, value):
    from bot.config import slack_posts_per_second, sweep_every_seconds
    from bot.exceptions import ConfigError

    for name, read in (
        ("SLACK_POSTS_PER_SECOND", slack_posts_per_second),
        ("SWEEP_EVERY_SECONDS", sweep_every_seconds),
    ):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=f"{name}=.*positive number"):
            read()


def _seqs(slack: SlackStandIn, ex: Execution) -> list[int] | None:
    """The run's thread in order; None before its parent is posted."""
    parents, seqs = thread_seqs(slack, ex)
    return seqs if parents else None


def test_a_batch_with_several_records_of_a_run_publishes_from_the_newest_only():
    from bot.handlers.timeline import newest_versions

    def record(execution_id: str, version: int) -> dict:
        image = {"execution_id": {"S": execution_id}, "version": {"N": str(version)}, "sk": {"S": "STATE"}}
        return {"eventName": "MODIFY", "dynamodb": {"NewImage": image}}

    batch = {"Records": [record("rb-a", 3), record("rb-b", 1), record("rb-a", 5), record("rb-a", 4)]}
    assert newest_versions(batch) == {"rb-a": 5, "rb-b": 1}


def test_the_timeline_function_records_slack_errors_and_record_age(monkeypatch):
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

    from bot import metrics
    from bot.handlers import timeline
    from bot.slack.publisher import PublishResult

    ex = run(2)

    class Paced:
        def publish(self, image, response_url=""):
            return PublishResult(0, 0, False, "not_in_channel", 0, paced=True, rate_limited=True)

    services = SimpleNamespace(publisher=Paced, secrets=None)
    record = {
        "eventName": "MODIFY",
        "dynamodb": {"NewImage": to_item(ex), "ApproximateCreationDateTime": time.time() - 2},
    }
    with metrics.collected() as documents:
        timeline.publish_record(DynamoDBRecord(record), services)
    text = json.dumps(documents)
    assert "not_in_channel" in text and "ratelimited" in text and "timeline" in text


def test_a_late_duplicate_of_an_older_state_changes_nothing(slack, publisher):  # noqa: F811
    newer = run(6)
    publisher.publish(newer)
    calls = len(slack.calls)
    older = dataclasses.replace(run(3), created_at_ms=newer.created_at_ms, timeline=newer.timeline[:3])
    result = publisher.publish(older)
    assert (result.posted, result.parent_updated) == (0, False)
    assert len(slack.calls) == calls, "the parent is not turned back to the older state"
    assert publisher.posts.get(newer.execution_id).seen_version == newer.version
