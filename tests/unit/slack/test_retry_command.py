"""`/runbook retry <execution-id> [confirm=true]`: who may resume which run where, and every refusal."""

from __future__ import annotations

import dataclasses

import boto3
import pytest

from bot.catalog import load_catalog
from bot.engine import machine
from bot.exceptions import CommandError
from bot.slack import grammar
from bot.slack.commands import CommandService, Invocation
from bot.store import keys
from bot.store.executions import ExecutionStore
from bot.store.model import EventKind, Status, StepRecord, TimelineEvent

ACME, GLOBEX = "C0ACMEOPS", "C0GLOBEXOPS"
NOW = 1_795_000_000_000
ORDERS_LOCK = keys.table_lock_key("partner-acme", "acme-orders")


@pytest.fixture
def service(executions_table):
    store = ExecutionStore(boto3.client("dynamodb"), executions_table)
    groups = {"S0ACMEONCALL": frozenset({"U0ONCALL"})}
    return CommandService(store, load_catalog, lambda: NOW, lambda g: groups.get(g, frozenset())), store


def ask(service_and_store, text, *, user="U0DEVONCALL", channel=ACME, trigger=None) -> str:
    service, _ = service_and_store
    return service.answer(Invocation(text, user, channel, "T0LOCAL", trigger or f"t:{text}:{user}")).text


def start(service_and_store, text="throttle partner-acme", user="U0DEVONCALL") -> str:
    answer = ask(service_and_store, text, user=user, trigger=f"start:{text}:{user}")
    assert "execution `" in answer, answer
    return answer.split("execution `")[1].split("`", maxsplit=1)[0]


def end(store: ExecutionStore, execution_id: str, status=Status.FAILED, *, at="hot_keys", events=(), **more):
    """Move a started run to an end, as the worker would have: two steps done, then `at` failed."""
    ex = store.get(execution_id)
    done = tuple(
        StepRecord(s, "succeeded", 1, NOW - 9_000, NOW - 8_000, {"ok": True}) for s in ("preflight", "detect")
    )
    failed = (
        (StepRecord(at, "failed", 1, NOW - 7_000, NOW - 6_000, error_code="InternalError"),) if at else ()
    )
    error = {"code": "InternalError", "message": "boom", **({"step": at} if at else {})}
    seq = ex.last_seq
    timeline = tuple(dataclasses.replace(e, seq=seq + i + 1) for i, e in enumerate(events))
    final = TimelineEvent(seq + len(timeline) + 1, NOW - 5_000, EventKind.RUN_FAILED, "run failed: boom")
    changes = {
        "cursor": None,
        "error": error if status in {Status.FAILED, Status.TIMED_OUT} else {},
        "expires_at": (NOW - 5_000) // 1000 + machine.RETENTION_SECONDS,
        "due_at_ms": None,
        **more,
    }
    t = machine.Transition(ex.version, NOW - 5_000, status, changes, (*done, *failed), (*timeline, final))
    store.commit(execution_id, t)
    return store.get(execution_id)


# -- it resumes ------------------------------------------------------------------------------------


def test_the_requester_resumes_a_failed_run_from_its_failed_step_in_the_partners_channel(service):
    _, store = service
    execution_id = start(service)
    ended = end(store, execution_id)
    answer = ask(service, f"retry {execution_id}")
    assert f"Resuming `{execution_id}` from *Find hot partition keys*" in answer, answer
    assert "2 completed steps and their outputs are kept" in answer
    ex = store.get(execution_id)
    assert ex.status is Status.RUNNING and ex.cursor == "hot_keys" and ex.version == ended.version + 1
    assert ex.expires_at is None and ex.reopened == 1 and ex.steps["detect"].outputs == {"ok": True}
    resumed = ex.timeline[-1]
    assert resumed.kind is EventKind.RUN_RESUMED and resumed.actor == "U0DEVONCALL"
    assert store.lock_holder(ORDERS_LOCK) == execution_id, "it holds its table lock again"


@pytest.mark.parametrize("user", ["U0ACMELEAD", "U0ONCALL"])  # named, and a member of an approvers' group
def test_the_partners_approvers_may_resume_a_run_they_did_not_start(service, user):
    _, store = service
    execution_id = start(service)
    end(store, execution_id, Status.TIMED_OUT)
    assert "Resuming" in ask(service, f"retry {execution_id}", user=user)
    assert store.get(execution_id).timeline[-1].actor == user


def test_a_risky_failed_step_is_resumed_to_be_approved_again(service):
    _, store = service
    execution_id = start(service)
    end(store, execution_id, at="mitigate", approved_steps=("mitigate",))
    answer = ask(service, f"retry {execution_id}")
    assert "needs an approver again" in answer
    ex = store.get(execution_id)
    assert ex.approved_steps == () and ex.status is Status.RUNNING and ex.cursor == "mitigate"


def test_the_requester_may_resume_from_a_direct_message(service):
    _, store = service
    execution_id = start(service)
    end(store, execution_id)
    assert "Resuming" in ask(service, f"RETRY {execution_id.upper()}", channel="D0DIRECT")


# -- it refuses, saying what is valid -------------------------------------------------------------


def test_someone_who_is_neither_requester_nor_approver_is_refused(service):
    _, store = service
    execution_id = start(service)
    ended = end(store, execution_id)
    answer = ask(service, f"retry {execution_id}", user="U0STRANGER")
    assert "only the requester <@U0DEVONCALL> or Acme Logistics's approvers may retry" in answer
    assert store.get(execution_id) == ended


def test_another_partners_channel_is_told_where_to_ask(service):
    _, store = service
    execution_id = start(service)
    ended = end(store, execution_id)
    answer = ask(service, f"retry {execution_id}", channel=GLOBEX, user="U0ACMELEAD")
    assert "belongs to Acme Logistics; ask in <#C0ACMEOPS>" in answer
    assert "Resuming" not in ask(service, f"retry {execution_id}", channel="D0DIRECT", user="U0STRANGER")
    assert store.get(execution_id) == ended


def test_an_unknown_or_removed_id_says_both_and_how_ids_look(service):
    answer = ask(service, "retry rb-aaaaaaaaaa")
    assert "no execution `rb-aaaaaaaaaa`" in answer and "90 days" in answer


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (Status.SUCCEEDED, "already SUCCEEDED; there is nothing to resume"),
        (Status.CANCELLED, "was CANCELLED by <@U0ACMELEAD>, and a cancelled run stays cancelled"),
    ],
)
def test_succeeded_and_cancelled_runs_are_not_resumed(service, status, says):
    _, store = service
    execution_id = start(service)
    ended = end(store, execution_id, status, at="", cancel_requested_by="U0ACMELEAD")
    answer = ask(service, f"retry {execution_id}")
    assert says in answer and "/runbook throttle partner-acme" in answer
    assert store.get(execution_id) == ended


def test_a_run_that_has_not_ended_is_refused_with_how_to_follow_or_stop_it(service):
    execution_id = start(service)
    answer = ask(service, f"retry {execution_id}")
    assert f"`{execution_id}` is PENDING, not ended: retry resumes FAILED or TIMED_OUT runs" in answer
    assert f"/runbook status {execution_id}" in answer and f"/runbook cancel {execution_id}" in answer


def test_a_second_retry_is_told_who_resumed_it(service):
    _, store = service
    execution_id = start(service)
    end(store, execution_id)
    assert "Resuming" in ask(service, f"retry {execution_id}", user="U0ACMELEAD")
    answer = ask(service, f"retry {execution_id}")
    assert "is RUNNING (resumed by <@U0ACMELEAD>), not ended" in answer
    assert len([e for e in store.get(execution_id).timeline if e.kind is EventKind.RUN_RESUMED]) == 1


def test_a_run_whose_records_expired_is_refused(service):
    _, store = service
    execution_id = start(service)
    ended = end(store, execution_id, expires_at=NOW // 1000 - 1)
    answer = ask(service, f"retry {execution_id}")
    assert "ended more than 90 days ago and its records have expired" in answer
    assert store.get(execution_id) == ended


def test_a_table_another_active_run_changes_now_is_named(service):
    _, store = service
    execution_id = start(service)
    end(store, execution_id)
    other = start(service, "throttle partner-acme window=30m", user="U0ACMESRE")  # takes the table lock
    answer = ask(service, f"retry {execution_id}")
    assert f"`{other}` is running on a table `{execution_id}` would change" in answer
    assert f"/runbook cancel {other}" in answer
    assert store.get(execution_id).status is Status.FAILED and store.lock_holder(ORDERS_LOCK) == other


def test_a_run_whose_runbook_changed_since_is_refused(service):
    _, store = service
    execution_id = start(service)
    end(store, execution_id)
    store.client.update_item(
        TableName=store.table,
        Key={k: {"S": v} for k, v in keys.state_key(execution_id).items()},
        UpdateExpression="SET runbook_version = :v",
        ExpressionAttributeValues={":v": {"S": "0ld0ld0"}},
    )
    answer = ask(service, f"retry {execution_id}")
    assert "runbook `throttle` changed since" in answer and "would mix two versions" in answer


def test_a_run_that_ended_outside_any_step_cannot_be_resumed(service):
    _, store = service
    execution_id = start(service)
    end(store, execution_id, at="")
    assert "it ended outside any step" in ask(service, f"retry {execution_id}")


def test_a_rolled_back_run_says_what_was_rolled_back_and_resumes_only_when_confirmed(service):
    _, store = service
    execution_id = start(service)
    rollback = TimelineEvent(
        0, NOW - 5_500, EventKind.STEP_FINISHED, "acme-orders: on-demand → 100/100", "rollback"
    )
    ended = end(store, execution_id, at="replay", events=(rollback,), phase="on_failure", end_status="FAILED")
    answer = ask(service, f"retry {execution_id}")
    assert (
        "is not resumed yet" in answer and "*Roll capacity back*: acme-orders: on-demand → 100/100" in answer
    )
    assert f"/runbook retry {execution_id} confirm=true" in answer
    assert store.get(execution_id) == ended, "nothing changes before it is confirmed"
    assert "Resuming" in ask(service, f"retry {execution_id} confirm=true")
    ex = store.get(execution_id)
    assert ex.phase == "main" and ex.cursor == "replay" and ex.end_status == ""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("retry", "`retry` takes one execution id and optionally confirm=true"),
        ("retry rb-aaaaaaaaaa rb-bbbbbbbbbb", "after the execution id, `retry` takes only confirm=true"),
        ("retry rb-aaaaaaaaaa confirm=maybe", "after the execution id, `retry` takes only confirm=true"),
        ("retry rb-1", "is not an execution id"),
    ],
)
def test_a_malformed_retry_says_what_is_valid(text, says):
    with pytest.raises(CommandError, match=says.replace("(", r"\(")):
        grammar.parse(text)


def test_retry_parses_with_and_without_confirmation():
    assert grammar.parse("retry rb-aaaaaaaaaa") == grammar.Retry("rb-aaaaaaaaaa")
    assert grammar.parse("retry rb-aaaaaaaaaa CONFIRM=true") == grammar.Retry("rb-aaaaaaaaaa", True)
    assert "/runbook retry" in grammar.GRAMMAR


def test_the_retry_command_loads_no_botocore_on_the_ack_path():
    import subprocess
    import sys

    probe = "import sys, bot.slack.commands, bot.slack.retry; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
