"""A run resumed with `/runbook retry` after it ended: its thread goes on under the same parent,
the parent turns back to running, a new approval gets live buttons, and a late duplicate of the
ended state turns nothing back."""

from __future__ import annotations

import dataclasses
import json

from bot.store.model import Approval, EventKind, Status, TimelineEvent
from tests.unit.slack.test_publisher_errors import publisher, run, slack, thread_seqs  # noqa: F401


def _event(ex, kind, summary, step_id="mitigate", actor=""):
    return TimelineEvent(ex.last_seq + 1, ex.updated_at_ms + 1, kind, summary, step_id, actor)


def _then(ex, kind, summary, status, **more):
    event = _event(ex, kind, summary, actor=more.pop("actor", ""))
    return dataclasses.replace(
        ex,
        status=status,
        version=ex.version + 1,
        updated_at_ms=event.at_ms,
        timeline=(*ex.timeline, event),
        **more,
    )


def _buttons(message):
    return [
        element
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    ]


def _parent(stand_in, ex):
    (parent,) = [
        m
        for m in stand_in.messages(ex.channel)
        if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == ex.execution_id
    ]
    return parent


def test_a_resumed_run_goes_on_in_its_thread_under_the_same_parent(slack, publisher):  # noqa: F811
    ex = run(1)
    asked = Approval("mitigate", ex.updated_at_ms, ex.updated_at_ms + 60_000, "acme-orders → on-demand")
    ex = _then(ex, EventKind.APPROVAL_REQUESTED, "needs approval", Status.AWAITING_APPROVAL, approval=asked)
    publisher.publish(ex)
    first_ts = slack.thread(ex.channel, _parent(slack, ex)["ts"])[-1]["ts"]
    ex = _then(ex, EventKind.STEP_FAILED, "mitigate failed", Status.RUNNING, approval=None)
    failed = _then(ex, EventKind.RUN_FAILED, "run failed: boom", Status.FAILED, cursor=None)
    publisher.publish(failed)
    parent = _parent(slack, failed)
    assert "FAILED" in parent["text"]
    closed = next(m for m in slack.thread(ex.channel, parent["ts"]) if m["ts"] == first_ts)
    assert _buttons(closed) == [], "the run ended: its approval's buttons went"

    resumed = _then(
        failed,
        EventKind.RUN_RESUMED,
        "resumed from Add capacity",
        Status.RUNNING,
        cursor="mitigate",
        actor="U0ACMELEAD",
    )
    result = publisher.publish(resumed)
    assert result.posted == 1 and result.parent_updated
    assert "RUNNING" in _parent(slack, resumed)["text"], "the parent is a running run's again"
    assert thread_seqs(slack, resumed) == (1, [1, 2, 3, 4, 5])

    publisher.publish(failed)  # a late duplicate of the ended state
    assert "RUNNING" in _parent(slack, resumed)["text"] and thread_seqs(slack, resumed) == (
        1,
        [1, 2, 3, 4, 5],
    )

    again = Approval(
        "mitigate", resumed.updated_at_ms, resumed.updated_at_ms + 60_000, "acme-orders → on-demand"
    )
    waiting = _then(
        resumed, EventKind.APPROVAL_REQUESTED, "needs approval", Status.AWAITING_APPROVAL, approval=again
    )
    publisher.publish(waiting)
    request = slack.thread(ex.channel, _parent(slack, waiting)["ts"])[-1]
    values = [json.loads(b["value"]) for b in _buttons(request)]
    assert [b["action_id"] for b in _buttons(request)] == ["approve", "approve_comment", "reject"]
    assert {v["version"] for v in values} == {waiting.version}, "live buttons for the new request"

    granted = _then(waiting, EventKind.APPROVAL_GRANTED, "approved", Status.APPROVED, actor="U0ACMELEAD")
    done = _then(granted, EventKind.RUN_SUCCEEDED, "succeeded", Status.SUCCEEDED, cursor=None)
    publisher.publish(done)
    assert thread_seqs(slack, done) == (1, [1, 2, 3, 4, 5, 6, 7, 8])
    assert "SUCCEEDED" in _parent(slack, done)["text"]
