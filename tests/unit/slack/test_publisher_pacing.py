"""Slack allows about one post per second per channel: a busy channel's backlog waits its turn
without a stream lane sleeping through it, and the sweeper nudges the run when its turn comes."""

from __future__ import annotations

import dataclasses
import json
import time
from types import SimpleNamespace

import boto3
import pytest

from bot.handlers.sweeper import sweep
from bot.local.slack_api import SlackStandIn
from bot.store import keys
from bot.store.codec import to_item
from bot.store.executions import ExecutionStore
from tests.unit.slack.test_publisher_errors import publisher, run, thread_seqs  # noqa: F401


@pytest.fixture
def slack(monkeypatch):
    stand_in = SlackStandIn(token="xoxb-test", time_scale=1.0)  # Slack's own clock: Retry-After 30 is 30 s
    monkeypatch.setenv("SLACK_API_URL", stand_in.start())
    monkeypatch.setenv("SLACK_RETRY_BACKOFF_SECONDS", "0.01")
    yield stand_in
    stand_in.stop()


def test_a_rate_limited_channel_defers_the_rest_at_once_and_the_sweeper_nudges_it(slack, publisher):  # noqa: F811
    ex = run(6)
    store = ExecutionStore(boto3.client("dynamodb"), publisher.posts.table)
    store.client.put_item(TableName=store.table, Item=to_item(ex))
    slack.fail(
        "chat.postMessage", status=429, retry_after=30, skip=3, times=None
    )  # the channel's budget is spent

    started, wall = time.monotonic(), time.time()
    result = publisher.publish(ex)
    assert time.monotonic() - started < 3, "the lane never sleeps out Slack's Retry-After"
    assert result.paced and thread_seqs(slack, ex) == (1, [1, 2])
    posts = publisher.posts.get(ex.execution_id)
    assert posts.paced_until_ms >= wall * 1000 + 29_000
    assert posts.retry_at_ms == posts.paced_until_ms
    assert posts.attempting_through == posts.posted_seq == 2, "a 429 posted nothing: nothing to look for"

    calls = len(slack.calls)
    assert publisher.publish(ex).paced and len(slack.calls) == calls, "no call to Slack before its time"

    slack.clear_faults()
    report = sweep(store, _Catalog(), None, posts.retry_at_ms + 1)
    assert report.moved == {"nudge": 1}
    assert (
        "nudged_at_ms"
        in store.client.get_item(
            TableName=store.table, Key={k: {"S": v} for k, v in keys.state_key(ex.execution_id).items()}
        )["Item"]
    ), "a write on the state item: a stream record for the publisher"
    for _ in range(10):  # each nudge publishes what the channel takes now (Slack: ~1 post/s)
        waiting = publisher.posts.get(ex.execution_id)
        publisher.clock = lambda w=waiting: max(w.paced_until_ms / 1000, time.time())
        if not publisher.publish(ex).paced:
            break
        time.sleep(1)
    assert thread_seqs(slack, ex) == (1, [1, 2, 3, 4, 5, 6]), "every event once, in order"
    caught_up = publisher.posts.get(ex.execution_id)
    assert (caught_up.paced_until_ms, caught_up.retry_at_ms) == (0, 0)
    assert [d for d in store.due(10**14)] == [], "nothing left in the due-index"


class _Catalog:
    runbooks: dict = {}


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
            return PublishResult(0, 0, False, "not_in_channel", 0, paced=True)

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
