"""`/runbook retry` in the state machine: an ended run continues at its failed step. Pure."""

from __future__ import annotations

import dataclasses

import pytest

from bot.engine import machine
from bot.engine.model import RetryPolicy, Risk
from bot.engine.resumes import RESUMABLE, locks_of, resume_point, rolled_back
from bot.store import keys
from bot.store.model import TERMINAL, EventKind, Status
from tests.unit.engine.runbooks import T0, always, effect, execution, run_to_end, runbook, step

FAIL = machine.Failed(T0, "ValidationException", "bad input", False)
RB = runbook(step("a"), step("b"), step("c"))
RISKY = runbook(step("a"), step("b", risk=Risk.HIGH), step("c"))
WITH_ROLLBACK = runbook(
    step("a", action="dynamodb.set_capacity"),
    step("b"),
    on_failure=(step("rollback", action="dynamodb.set_capacity"), step("tell", action="notify")),
)


def failed_at_b(rb=RB):
    ex = run_to_end(rb, execution(rb), results={"b": FAIL})
    assert ex.status is Status.FAILED and ex.error["step"] == "b"
    return ex


def test_a_failed_run_resumes_at_its_failed_step_keeping_what_completed():
    ex = failed_at_b()
    assert ex.expires_at is not None
    t = machine.resume(ex, RB, "U0REQ", T0 + 5_000)
    after = machine.apply(ex, t)
    assert t.from_version == ex.version and t.to_version == ex.version + 1
    assert t.expect_status == RESUMABLE, "only a FAILED or TIMED_OUT run is written over"
    assert after.status is Status.RUNNING and after.cursor == "b" and after.phase == "main"
    assert after.attempt == 1 and after.checkpoint is None and after.step_started_at_ms == 0
    assert after.expires_at is None, "its retention TTL goes"
    assert after.error == {} and after.end_status == "" and after.reopened == 1
    assert after.steps["a"] == ex.steps["a"], "completed steps keep their records and outputs"
    assert after.due_reason == "stuck" and after.due_at_ms and after.due_at_ms > T0 + 5_000
    (event,) = t.events
    assert event.kind is EventKind.RUN_RESUMED and event.actor == "U0REQ" and event.step_id == "b"
    assert event.seq == ex.last_seq + 1 and "resumed from b" in event.summary
    assert "ValidationException" in event.summary and "1 completed step kept" in event.summary


def test_the_resumed_run_reruns_the_failed_step_and_succeeds():
    ex = failed_at_b()
    resumed = machine.apply(ex, machine.resume(ex, RB, "U0REQ", T0))
    plan = machine.plan(resumed, RB, T0, always, effect)
    assert isinstance(plan, machine.Execute) and plan.step.id == "b"
    done = run_to_end(RB, resumed)
    assert done.status is Status.SUCCEEDED and done.steps["b"].outcome == "succeeded"
    assert done.expires_at is not None, "ended again: a TTL again"
    kinds = [e.kind for e in done.timeline]
    assert kinds.count(EventKind.RUN_FAILED) == 1 and kinds[-1] is EventKind.RUN_SUCCEEDED
    assert [e.seq for e in done.timeline] == list(range(1, len(done.timeline) + 1))


def test_a_fresh_attempt_has_a_fresh_idempotency_key():
    ex = failed_at_b()
    first = keys.idempotency_key(ex.execution_id, "b", ex.steps["b"].attempts, ex.reopened)
    resumed = machine.apply(ex, machine.resume(ex, RB, "U0REQ", T0))
    again = keys.idempotency_key(resumed.execution_id, "b", resumed.attempt, resumed.reopened)
    assert first == "rb-test:b:1" and again == "rb-test:b:1:r1" and first != again
    twice = machine.apply(run_to_end(RB, resumed, results={"b": FAIL}), machine.resume(ex, RB, "U0REQ", T0))
    assert keys.idempotency_key(twice.execution_id, "b", 1, twice.reopened).endswith(":r1")


def test_the_retry_policy_starts_over_on_a_resumed_step():
    rb = runbook(step("a"), step("b", retry=RetryPolicy(max_attempts=2)))
    flaky = machine.Failed(T0, "ThrottlingException", "slow down", True)
    ex = run_to_end(rb, execution(rb), results={"b": flaky})
    # The run sleeps between attempts: drive attempt 2 by hand, failing for good.
    for _ in range(3):
        if ex.status in TERMINAL:
            break
        ex = machine.apply(ex, machine.after_step(ex, rb, rb.step("b"), flaky, T0, always, effect))
    assert ex.status is Status.FAILED and ex.steps["b"].attempts == 2
    resumed = machine.apply(ex, machine.resume(ex, rb, "U0REQ", T0))
    t = machine.after_step(resumed, rb, rb.step("b"), flaky, T0, always, effect)
    assert t.status is Status.RUNNING and t.set["attempt"] == 2, "a resumed step gets its retries again"


def test_a_risky_failed_step_asks_for_approval_again_with_the_workers_effect():
    ex = run_to_end(RISKY, execution(RISKY))
    assert ex.status is Status.AWAITING_APPROVAL
    ex = machine.apply(ex, machine.decide(ex, RISKY, "U0APPROVER", True, T0, always, effect))
    plan = machine.plan(ex, RISKY, T0, always, effect)
    assert isinstance(plan, machine.Execute) and plan.step.id == "b"
    ex = machine.apply(ex, machine.after_step(ex, RISKY, plan.step, FAIL, T0, always, effect))
    assert ex.status is Status.FAILED and "b" in ex.approved_steps
    resumed = machine.apply(ex, machine.resume(ex, RISKY, "U0REQ", T0))
    assert resumed.approved_steps == () and resumed.approval is None, "no approval carries over"
    plan = machine.plan(resumed, RISKY, T0, always, effect)
    assert isinstance(plan, machine.Move) and plan.transition.status is Status.AWAITING_APPROVAL
    assert machine.apply(resumed, plan.transition).approval.step_id == "b"


def test_a_timed_out_approval_resumes_by_asking_again():
    ex = run_to_end(RISKY, execution(RISKY))
    expired = machine.on_due(ex, RISKY, ex.approval.expires_at_ms + 1, always, None)
    ex = machine.apply(ex, expired)
    assert ex.status is Status.TIMED_OUT and ex.error["step"] == "b"
    resumed = machine.apply(ex, machine.resume(ex, RISKY, "U0ACMELEAD", T0))
    assert resumed.status is Status.RUNNING and resumed.cursor == "b"
    plan = machine.plan(resumed, RISKY, T0, always, effect)
    assert isinstance(plan, machine.Move) and plan.transition.status is Status.AWAITING_APPROVAL


def test_a_run_that_went_down_its_on_failure_path_resumes_on_the_main_path():
    ex = run_to_end(WITH_ROLLBACK, execution(WITH_ROLLBACK), results={"b": FAIL})
    assert (
        ex.status is Status.FAILED
        and ex.phase == "on_failure"
        and ex.steps["rollback"].outcome == "succeeded"
    )
    undone = rolled_back(ex, WITH_ROLLBACK)
    assert [e.step_id for e in undone] == ["rollback"], "a notify undoes nothing; a capacity change does"
    resumed = machine.apply(ex, machine.resume(ex, WITH_ROLLBACK, "U0REQ", T0))
    assert "1 completed step kept" in resumed.timeline[-1].summary, "a rollback is not a kept step"
    assert resumed.phase == "main" and resumed.end_status == "" and resumed.cursor == "b"
    assert rolled_back(resumed, WITH_ROLLBACK) == [], (
        "what was rolled back before the resume is not asked again"
    )
    done = run_to_end(WITH_ROLLBACK, resumed)
    assert done.status is Status.SUCCEEDED


def test_a_cancel_request_that_came_too_late_does_not_cancel_the_resumed_run():
    ex = dataclasses.replace(failed_at_b(), cancel_requested_by="U0OTHER")
    resumed = machine.apply(ex, machine.resume(ex, RB, "U0REQ", T0))
    assert resumed.cancel_requested_by == ""
    assert isinstance(machine.plan(resumed, RB, T0, always, effect), machine.Execute)


@pytest.mark.parametrize("status", sorted(set(Status) - RESUMABLE))
def test_only_failed_or_timed_out_runs_resume(status):
    ex = dataclasses.replace(failed_at_b(), status=status)
    with pytest.raises(ValueError, match="FAILED or TIMED_OUT"):
        machine.resume(ex, RB, "U0REQ", T0)


def test_a_run_that_failed_outside_a_step_has_no_resume_point():
    ex = dataclasses.replace(failed_at_b(), error={"code": "DrillTimeLimit", "message": "time"})
    assert resume_point(ex, RB) is None
    with pytest.raises(ValueError):
        machine.resume(ex, RB, "U0REQ", T0)
    gone = dataclasses.replace(ex, error={"code": "X", "step": "renamed"})
    assert resume_point(gone, RB) is None


def test_a_resumed_run_takes_the_locks_it_started_with():
    from bot.catalog import load_catalog
    from bot.engine.starts import run_locks

    catalog = load_catalog()
    throttle, acme = catalog.runbooks["throttle"], catalog.partners["partner-acme"]
    ex = dataclasses.replace(
        failed_at_b(), runbook="throttle", partner="partner-acme", params={"table": "orders"}
    )
    assert locks_of(ex, throttle, acme) == run_locks(throttle, acme, ex.params, drill=False)
    assert locks_of(ex, throttle, acme) == [keys.table_lock_key("partner-acme", "acme-orders")]
    alarm = dataclasses.replace(ex, trigger="alarm")
    assert locks_of(alarm, throttle, acme)[0] == keys.active_run_key("partner-acme", "throttle")
    drill = dataclasses.replace(ex, drill=True)
    assert locks_of(drill, throttle, acme) == [keys.table_lock_key("partner-acme", "acme-orders-drill")]


def test_only_the_state_a_retry_wrote_counts_as_just_resumed():
    from bot.engine.resumes import just_resumed

    ex = failed_at_b()
    assert not just_resumed(ex)
    resumed = machine.apply(ex, machine.resume(ex, RB, "U0REQ", T0 + 5_000))
    assert just_resumed(resumed)
    plan = machine.plan(resumed, RB, T0 + 6_000, always, effect)
    moved_on = machine.apply(
        resumed, machine.after_step(resumed, RB, plan.step, FAIL, T0 + 6_000, always, effect)
    )
    assert not just_resumed(moved_on)


def test_a_rollback_that_failed_part_way_is_reported_too():
    failing_rollback = machine.Failed(T0, "LimitExceededException", "too many changes today", False)
    ex = run_to_end(
        WITH_ROLLBACK, execution(WITH_ROLLBACK), results={"b": FAIL, "rollback": failing_rollback}
    )
    assert ex.status is Status.FAILED and ex.steps["rollback"].outcome == "failed"
    (event,) = rolled_back(ex, WITH_ROLLBACK)
    assert event.kind is EventKind.STEP_FAILED and "too many changes today" in event.summary
