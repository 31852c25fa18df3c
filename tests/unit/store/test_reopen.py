"""`ExecutionStore.reopen`: a retried run's one conditional write, under the claim rule, with its
locks, its TTL cleared, and refused once its items have expired."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from bot.engine import machine
from bot.exceptions import ClaimHeld, LockHeld, RunExpired, TransitionConflict
from bot.store import keys
from bot.store.executions import ExecutionStore
from bot.store.model import Status, StepRecord
from tests.conftest import CountingClient
from tests.unit.engine.runbooks import T0, always, effect, execution, runbook, step

RB = runbook(step("a"), step("b"), step("c"))
FAIL = machine.Failed(T0, "ValidationException", "bad input", False)
LOCK = keys.table_lock_key("partner-acme", "acme-orders")
NOW = T0 + 60_000


def failed_run(store: ExecutionStore, execution_id: str = "rb-test", **kw):
    """A run driven to FAILED at step b through the store, as the worker would commit it."""
    ex = execution(RB, execution_id=execution_id, **kw)
    assert store.create(ex)
    for _ in range(10):
        plan = machine.plan(ex, RB, T0, always, effect)
        if isinstance(plan, machine.Idle):
            break
        if isinstance(plan, machine.Move):
            t = plan.transition
        else:
            result = FAIL if plan.step.id == "b" else machine.Succeeded(T0, "ok", {"n": 1})
            t = machine.after_step(ex, RB, plan.step, result, T0, always, effect)
        store.commit(ex.execution_id, t)
        ex = store.get(ex.execution_id)
    assert ex.status is Status.FAILED and ex.expires_at
    return ex


@pytest.fixture
def store(executions_table):
    import boto3

    return ExecutionStore(CountingClient(boto3.client("dynamodb")), executions_table)


def hold(store: ExecutionStore, lock: dict[str, str], execution_id: str) -> None:
    store.client.put_item(
        TableName=store.table,
        Item={**{k: {"S": v} for k, v in lock.items()}, "execution_id": {"S": execution_id}},
    )


def test_reopen_moves_the_run_on_clears_its_ttl_takes_its_locks_and_drops_stale_progress(store):
    ex = failed_run(store)
    hold(store, LOCK, "rb-test")  # its own lock, left behind when it ended
    store.save_progress(ex.execution_id, "b", {"cursor": "page-7"}, T0)
    t = machine.resume(ex, RB, "U0REQ", NOW)
    store.reopen(ex, t, [LOCK], "retry-U0REQ", NOW, fresh_step="b")
    after = store.get(ex.execution_id)
    assert after.status is Status.RUNNING and after.version == ex.version + 1 and after.cursor == "b"
    assert after.expires_at is None, "no TTL: the reaper will not delete a running run"
    raw = store.client.get_item(
        TableName=store.table, Key={k: {"S": v} for k, v in keys.state_key("rb-test").items()}
    )
    assert keys.TTL_ATTRIBUTE not in raw["Item"]
    assert raw["Item"][keys.DUE_BUCKET]["S"] == keys.due_bucket("rb-test"), "the sweeper watches it again"
    assert after.steps["a"].outputs == {"n": 1} and after.timeline[-1].actor == "U0REQ"
    assert store.lock_holder(LOCK) == "rb-test"
    assert store.progress(ex.execution_id, "b") is None, "the re-run starts afresh"


def test_reopen_takes_over_a_lock_left_by_a_run_that_has_ended(store):
    other = failed_run(store, "rb-other")
    hold(store, LOCK, other.execution_id)
    ex = failed_run(store)
    store.reopen(ex, machine.resume(ex, RB, "U0REQ", NOW), [LOCK], "retry-U0REQ", NOW)
    assert store.lock_holder(LOCK) == "rb-test"


def test_reopen_is_refused_while_an_active_run_holds_a_lock_naming_it(store):
    ex = failed_run(store)
    active = execution(RB, execution_id="rb-active")
    store.create(active)
    hold(store, LOCK, "rb-active")
    t = machine.resume(ex, RB, "U0REQ", NOW)
    with pytest.raises(LockHeld) as refused:
        store.reopen(ex, t, [LOCK], "retry-U0REQ", NOW)
    assert refused.value.holder == "rb-active"
    assert store.get("rb-test") == ex, "nothing changed"
    assert store.claim_lease("rb-test", ex.version) is None, "the claim was given back"


def test_reopen_is_refused_once_the_runs_ttl_has_passed(store):
    ex = failed_run(store)
    late = ex.expires_at * 1000 + 1
    t = machine.resume(ex, RB, "U0REQ", late)
    with pytest.raises(RunExpired):
        store.reopen(ex, t, [], "retry-U0REQ", late)
    assert store.get("rb-test").status is Status.FAILED


def test_reopen_is_refused_when_a_spilled_output_is_gone(store):
    ex = failed_run(store)
    big = StepRecord("a", "succeeded", 1, T0, T0, {"blob": "x" * 10_000})
    store.commit(ex.execution_id, machine.Transition(ex.version, T0, Status.FAILED, steps=(big,)))
    ex = store.get(ex.execution_id)
    assert ex.steps["a"].spilled
    store.client.delete_item(
        TableName=store.table, Key={k: {"S": v} for k, v in keys.output_key("rb-test", "a").items()}
    )
    with pytest.raises(RunExpired):
        store.reopen(ex, machine.resume(ex, RB, "U0REQ", NOW), [], "retry-U0REQ", NOW)


def test_reopen_of_a_run_that_moved_is_a_conflict(store):
    ex = failed_run(store)
    first = machine.resume(ex, RB, "U0REQ", NOW)
    store.reopen(ex, first, [], "retry-U0REQ", NOW)
    store.release(ex.execution_id, ex.version, "retry-U0REQ")  # even without the claim in the way
    with pytest.raises(TransitionConflict):
        store.reopen(ex, machine.resume(ex, RB, "U0SRE", NOW), [], "retry-U0SRE", NOW)
    assert [e.actor for e in store.get("rb-test").timeline if e.kind.value == "run_resumed"] == ["U0REQ"]


def test_two_people_retrying_at_once_one_resumes_the_other_is_told(store):
    ex = failed_run(store)
    outcomes: dict[str, str] = {}

    def retry(user: str) -> None:
        try:
            store.reopen(ex, machine.resume(ex, RB, user, NOW), [LOCK], f"retry-{user}", NOW)
            outcomes[user] = "resumed"
        except (ClaimHeld, TransitionConflict) as refused:
            outcomes[user] = type(refused).__name__

    racing = [threading.Thread(target=retry, args=(u,)) for u in ("U0REQ", "U0ACMELEAD")]
    for thread in racing:
        thread.start()
    for thread in racing:
        thread.join()
    assert sorted(outcomes.values()) == ["ClaimHeld", "resumed"], outcomes
    after = store.get("rb-test")
    assert (
        after.version == ex.version + 1
        and len([e for e in after.timeline if e.kind.value == "run_resumed"]) == 1
    )


def test_the_lean_ack_path_client_reopens_and_refuses_alike(server_table):
    from bot.store import lean

    store = ExecutionStore(lean.dynamodb(), server_table)
    ex = failed_run(store)
    active = dataclasses.replace(execution(RB, execution_id="rb-active"))
    store.create(active)
    hold(store, LOCK, "rb-active")
    with pytest.raises(LockHeld):
        store.reopen(ex, machine.resume(ex, RB, "U0REQ", NOW), [LOCK], "retry-U0REQ", NOW)
    store.reopen(ex, machine.resume(ex, RB, "U0REQ", NOW), [], "retry-U0REQ", NOW)
    stale = machine.resume(ex, RB, "U0REQ", NOW)
    with pytest.raises(TransitionConflict):  # the conditional write itself refuses: read back, told why
        store._reopen(ex, stale, [], NOW, "")
    with pytest.raises(TransitionConflict):  # and the transaction with a (free) lock
        store._reopen(ex, stale, [keys.table_lock_key("partner-acme", "acme-free")], NOW, "")
    assert store.lock_holder(keys.table_lock_key("partner-acme", "acme-free")) is None
    assert store.get("rb-test").status is Status.RUNNING


def _reopen_first(store: ExecutionStore, run, lock) -> None:
    """Reopen `run` (holding `lock`) just before the next transaction is sent: the race a lock
    takeover must lose."""
    send = store.client.transact_write_items

    def racing(**request):
        store.client.transact_write_items = send
        store.reopen(run, machine.resume(run, RB, "U0REQ", NOW), [lock], "retry-U0REQ", NOW)
        return send(**request)

    store.client.transact_write_items = racing


def test_a_new_run_never_takes_the_lock_of_an_ended_run_that_is_reopened_meanwhile(store):
    ended = failed_run(store, "rb-ended")
    hold(store, LOCK, "rb-ended")
    _reopen_first(store, ended, LOCK)
    newcomer = execution(RB, execution_id="rb-newcomer")
    assert store.create_locked(newcomer, [LOCK]) == "rb-ended", "told who holds it now"
    assert store.lock_holder(LOCK) == "rb-ended" and store.get("rb-newcomer") is None


def test_a_retry_never_takes_the_lock_of_another_ended_run_that_is_reopened_meanwhile(store):
    first, second = failed_run(store, "rb-first"), failed_run(store, "rb-second")
    hold(store, LOCK, "rb-first")
    _reopen_first(store, first, LOCK)
    with pytest.raises(LockHeld) as refused:
        store.reopen(second, machine.resume(second, RB, "U0SRE", NOW), [LOCK], "retry-U0SRE", NOW)
    assert refused.value.holder == "rb-first" and store.get("rb-second").status is Status.FAILED
    assert store.get("rb-first").status is Status.RUNNING
