"""The state machine over every status of CONTRACT §4, pure: no AWS, no Slack."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.actions.base import Effect
from bot.engine import machine
from bot.engine.model import RetryPolicy, Risk
from bot.store.model import ACTIVE, TERMINAL, Approval, EventKind, Status
from tests.unit.engine.runbooks import (
    T0,
    THREE,
    always,
    effect,
    execution,
    run_to_end,
    runbook,
    step,
    succeed,
)


def test_pending_run_executes_first_step_and_announces_start_in_one_write():
    ex = execution(THREE)
    plan = machine.plan(ex, THREE, T0, always, effect)
    assert isinstance(plan, machine.Execute) and plan.step.id == "a"
    t = machine.after_step(ex, THREE, plan.step, succeed(), T0 + 5, always, effect)
    assert t.status is Status.RUNNING and t.from_version == 0 and t.to_version == 1
    assert [e.kind for e in t.events] == [EventKind.RUN_STARTED, EventKind.STEP_FINISHED]
    assert [e.seq for e in t.events] == [1, 2]
    assert t.set["cursor"] == "b"


def test_each_step_is_one_transition_and_the_last_ends_the_run():
    ex = run_to_end(THREE, execution(THREE))
    assert ex.status is Status.SUCCEEDED
    assert ex.version == 3  # one transition per step, the last one also ends the run
    assert [r.outcome for r in ex.steps.values()] == ["succeeded"] * 3
    assert ex.timeline[-1].kind is EventKind.RUN_SUCCEEDED
    assert [e.seq for e in ex.timeline] == list(range(1, len(ex.timeline) + 1))
    assert ex.due_at_ms is None and ex.cursor is None


def test_terminal_runs_are_idle():
    for status in TERMINAL:
        ex = execution(THREE, status=status)
        assert isinstance(machine.plan(ex, THREE, T0, always, effect), machine.Idle)


def test_failed_step_follows_on_failure_path_then_fails_run_with_error_on_timeline():
    rb = runbook(step("a"), step("b"), on_failure=(step("rollback"),))
    ex = run_to_end(
        rb, execution(rb), results={"b": machine.Failed(T0, "ValidationException", "bad key", False)}
    )
    assert ex.status is Status.FAILED
    assert ex.steps["rollback"].outcome == "succeeded"
    assert ex.error == {"code": "ValidationException", "message": "bad key", "step": "b"}
    kinds = [e.kind for e in ex.timeline]
    assert EventKind.STEP_FAILED in kinds and kinds[-1] is EventKind.RUN_FAILED
    assert ex.timeline[-1].error_code == "ValidationException"


def test_failure_without_on_failure_path_fails_at_once():
    ex = run_to_end(THREE, execution(THREE), results={"a": machine.Failed(T0, "CheckFailed", "no", False)})
    assert ex.status is Status.FAILED and "b" not in ex.steps


def test_retryable_failure_sleeps_then_retries_with_next_attempt():
    rb = runbook(step("a", retry=RetryPolicy(max_attempts=3)), step("b"))
    ex = execution(rb, status=Status.RUNNING, version=4)
    t = machine.after_step(
        ex,
        rb,
        rb.steps[0],
        machine.Failed(T0, "ThrottlingException", "slow down", True, 2000),
        T0,
        always,
        effect,
    )
    after = machine.apply(ex, t)
    assert after.attempt == 2 and after.due_reason == "wake" and after.due_at_ms == T0 + 2000
    assert (
        after.timeline[-1].kind is EventKind.STEP_RETRY
        and after.timeline[-1].error_code == "ThrottlingException"
    )
    assert isinstance(machine.plan(after, rb, T0 + 1000, always, effect), machine.Idle)  # still sleeping
    woke = machine.on_due(after, rb, T0 + 2000, always, effect)
    assert woke is not None and woke.to_version == after.version + 1
    assert isinstance(
        machine.plan(machine.apply(after, woke), rb, T0 + 2001, always, effect), machine.Execute
    )


def test_retries_stop_at_max_attempts():
    rb = runbook(step("a", retry=RetryPolicy(max_attempts=2)))
    ex = execution(rb, status=Status.RUNNING, attempt=2)
    t = machine.after_step(
        ex, rb, rb.steps[0], machine.Failed(T0, "ThrottlingException", "x", True), T0, always, effect
    )
    assert t.status is Status.FAILED


def test_high_risk_step_waits_for_approval_with_expiry():
    rb = runbook(step("detect"), step("replay", risk=Risk.HIGH), step("verify"))
    ex = run_to_end(rb, execution(rb, approval_timeout_minutes=30))
    assert ex.status is Status.AWAITING_APPROVAL
    assert ex.approval == Approval(
        "replay",
        T0,
        T0 + 30 * 60_000,
        "runs notify",
        fingerprint="notify",
        version=ex.version,
        remind_at_ms=T0 + 15 * 60_000,
    )
    # One due time: the reminder at half the expiry comes first.
    assert ex.due_reason == "reminder" and ex.due_at_ms == T0 + 15 * 60_000
    assert ex.timeline[-1].kind is EventKind.APPROVAL_REQUESTED


def test_approval_runs_the_step_then_continues():
    rb = runbook(step("detect"), step("replay", risk=Risk.HIGH), step("verify"))
    waiting = run_to_end(rb, execution(rb))
    t = machine.decide(waiting, rb, "U0LEAD", True, T0 + 10, always, effect)
    assert t.status is Status.APPROVED and t.expect_status == frozenset({Status.AWAITING_APPROVAL})
    approved = machine.apply(waiting, t)
    assert approved.approval.decided_by == "U0LEAD" and approved.timeline[-1].actor == "U0LEAD"
    done = run_to_end(rb, approved)
    assert done.status is Status.SUCCEEDED and done.steps["replay"].outcome == "succeeded"


def test_rejection_follows_on_failure_and_never_runs_the_step():
    rb = runbook(step("detect"), step("replay", risk=Risk.HIGH), on_failure=(step("notify_rejected"),))
    waiting = run_to_end(rb, execution(rb))
    rejected = machine.apply(waiting, machine.decide(waiting, rb, "U0LEAD", False, T0, always, effect))
    done = run_to_end(rb, rejected)
    assert done.status is Status.FAILED and "replay" not in done.steps
    assert done.error["code"] == "ApprovalRejected"
    assert EventKind.APPROVAL_REJECTED in [e.kind for e in done.timeline]


def test_expired_approval_ends_timed_out():
    rb = runbook(step("detect"), step("replay", risk=Risk.HIGH))
    waiting = run_to_end(rb, execution(rb, approval_timeout_minutes=1))
    assert machine.on_due(waiting, rb, T0 + 29_000, always, effect) is None
    waiting = machine.apply(waiting, machine.on_due(waiting, rb, T0 + 30_000, always, effect))  # reminder
    assert machine.on_due(waiting, rb, T0 + 59_000, always, effect) is None
    t = machine.on_due(waiting, rb, T0 + 60_000, always, effect)
    expired = machine.apply(waiting, t)
    assert expired.status is Status.TIMED_OUT and expired.approval.decision == "expired"
    assert [e.kind for e in expired.timeline][-2:] == [EventKind.APPROVAL_EXPIRED, EventKind.RUN_TIMED_OUT]


def test_decide_refuses_runs_that_are_not_waiting():
    with pytest.raises(ValueError):
        machine.decide(execution(THREE), THREE, "U0LEAD", True, T0, always, effect)


def test_cancel_requested_stops_at_the_next_boundary_and_records_who():
    ex = execution(THREE, status=Status.RUNNING, cancel_requested_by="U0REQ", version=3)
    plan = machine.plan(ex, THREE, T0, always, effect)
    assert isinstance(plan, machine.Move)
    done = machine.apply(ex, plan.transition)
    assert done.status is Status.CANCELLED and done.timeline[-1].actor == "U0REQ"
    waiting = execution(THREE, status=Status.AWAITING_APPROVAL, cancel_requested_by="U0LEAD")
    assert (
        machine.apply(waiting, machine.plan(waiting, THREE, T0, always, effect).transition).status
        is Status.CANCELLED
    )


def test_false_when_skips_steps_in_the_same_write():
    rb = runbook(step("a"), step("b", when="false"), step("c"))
    ex = run_to_end(
        rb,
        execution(rb),
    )
    assert ex.status is Status.SUCCEEDED  # `always` ignores when; use a real predicate below
    never_b = lambda ex, s: s.id != "b"  # noqa: E731
    start = execution(rb)
    t = machine.after_step(start, rb, rb.steps[0], succeed(), T0, never_b, effect)
    assert t.set["cursor"] == "c"
    assert [e.kind for e in t.events][-1] is EventKind.STEP_SKIPPED
    assert {r.step_id: r.outcome for r in t.steps} == {"a": "succeeded", "b": "skipped"}


def test_checkpoint_keeps_the_step_and_its_state():
    rb = runbook(step("query", timeout_seconds=600), step("b"))
    ex = execution(rb, status=Status.RUNNING, version=2)
    t = machine.after_step(
        ex, rb, rb.steps[0], machine.Checkpointed(T0, {"page": 10}, "10 pages read"), T0 + 50, always, effect
    )
    after = machine.apply(ex, t)
    assert after.cursor == "query" and after.checkpoint == {"page": 10} and after.step_started_at_ms == T0
    assert after.timeline[-1].kind is EventKind.STEP_STARTED
    again = machine.apply(
        after,
        machine.after_step(
            after, rb, rb.steps[0], machine.Checkpointed(T0 + 100, {"page": 20}), T0 + 100, always, effect
        ),
    )
    assert again.timeline == after.timeline  # STEP_STARTED only once


def test_checkpointed_step_past_its_timeout_fails():
    rb = runbook(step("query", timeout_seconds=1))
    ex = execution(rb, status=Status.RUNNING, step_started_at_ms=T0, checkpoint={"page": 1})
    t = machine.after_step(
        ex, rb, rb.steps[0], machine.Checkpointed(T0 + 5000, {"page": 2}), T0 + 5000, always, effect
    )
    assert t.status is Status.FAILED and t.set["error"]["code"] == "StepTimedOut"


def test_stuck_step_is_restarted_then_failed_after_max_resumes():
    rb = runbook(step("a", timeout_seconds=10))
    ex = execution(rb, status=Status.RUNNING, due_at_ms=T0 + 70_000, due_reason="stuck")
    t = machine.on_due(ex, rb, T0 + 70_000, always, effect)
    assert t.set["resumes"] == 1 and t.events[0].kind is EventKind.STEP_RETRY
    stuck = execution(
        rb, status=Status.RUNNING, due_at_ms=T0, due_reason="stuck", resumes=machine.MAX_RESUMES
    )
    assert machine.on_due(stuck, rb, T0, always, effect).status is Status.FAILED


def test_succeed_action_ends_the_run_early():
    rb = runbook(step("a", action="succeed"), step("b"))
    ex = run_to_end(rb, execution(rb), results={"a": machine.Succeeded(T0, "nothing to do", end_run=True)})
    assert ex.status is Status.SUCCEEDED and "b" not in ex.steps


def test_sla_warning_is_posted_once_past_the_threshold():
    rb = THREE
    late = T0 + int(0.85 * 120 * 60_000)
    ex = run_to_end(rb, execution(rb), now=late)
    warnings = [e for e in ex.timeline if e.kind is EventKind.SLA_WARNING]
    assert len(warnings) == 1 and ex.sla_warned


def test_non_critical_failure_continues():
    rb = runbook(step("a", is_critical=False), step("b"))
    ex = run_to_end(rb, execution(rb), results={"a": machine.Failed(T0, "X", "x", False)})
    assert ex.status is Status.SUCCEEDED and ex.steps["a"].outcome == "failed"


def test_jump_on_failure_to_named_step():
    rb = runbook(step("a", on_failure="step:c"), step("b"), step("c"))
    ex = run_to_end(rb, execution(rb), results={"a": machine.Failed(T0, "X", "x", False)})
    assert ex.status is Status.SUCCEEDED and "b" not in ex.steps and ex.steps["c"].outcome == "succeeded"


OUTCOMES = st.sampled_from(["ok", "fail", "retry", "checkpoint"])


@settings(max_examples=200, deadline=None)
@given(st.lists(OUTCOMES, min_size=1, max_size=40), st.booleans())
def test_any_sequence_of_outcomes_keeps_versions_seqs_and_statuses_consistent(outcomes, with_rollback):
    rb = runbook(
        step("a", retry=RetryPolicy(max_attempts=3)),
        step("b", risk=Risk.HIGH),
        step("c"),
        on_failure=(step("undo"),) if with_rollback else (),
    )
    ex = execution(rb)
    now = T0
    for outcome in outcomes:
        now += 1000
        if ex.status is Status.AWAITING_APPROVAL:
            ex = machine.apply(ex, machine.decide(ex, rb, "U0LEAD", outcome != "fail", now, always, effect))
            continue
        if ex.due_reason == "wake" and ex.due_at_ms and ex.due_at_ms > now:
            now = ex.due_at_ms
            ex = machine.apply(ex, machine.on_due(ex, rb, now, always, effect))
            continue
        plan = machine.plan(ex, rb, now, always, effect)
        if isinstance(plan, machine.Idle):
            break
        if isinstance(plan, machine.Move):
            before = ex.version
            ex = machine.apply(ex, plan.transition)
            assert ex.version == before + 1
            continue
        result = {
            "ok": machine.Succeeded(now, "ok"),
            "fail": machine.Failed(now, "X", "x", False),
            "retry": machine.Failed(now, "ThrottlingException", "x", True, 10),
            "checkpoint": machine.Checkpointed(now, {"n": 1}),
        }[outcome]
        before = ex
        ex = machine.apply(ex, machine.after_step(ex, rb, plan.step, result, now, always, effect))
        assert ex.version == before.version + 1
        assert ex.status in ACTIVE or ex.status in TERMINAL
        if ex.status in TERMINAL:
            assert ex.cursor is None and ex.due_at_ms is None
        else:
            assert ex.due_at_ms is not None
    seqs = [e.seq for e in ex.timeline]
    assert seqs == list(range(1, len(seqs) + 1))
    assert "b" not in ex.steps or "b" in ex.approved_steps or ex.steps["b"].outcome == "skipped"


def test_apply_matches_fields_set_by_transition():
    ex = execution(THREE)
    t = machine.after_step(ex, THREE, THREE.steps[0], succeed(), T0, always, effect)
    after = machine.apply(ex, t)
    for name, value in t.set.items():
        assert getattr(after, name) == value
    assert dataclasses.replace(after, steps={}, timeline=()) != ex


# -- effects: computed by the worker, skipped when nothing changes, asked again when they change --

RISKY = runbook(step("a"), step("scale", action="dynamodb.set_capacity", risk=Risk.HIGH), step("c"))


def test_a_risky_step_with_nothing_to_change_is_skipped_with_the_reason_not_asked_for():
    def nothing(ex, s):
        return Effect(
            "acme-orders is already on-demand", "t:on-demand->on-demand", False, "already on-demand"
        )

    ex = execution(RISKY)
    t = machine.after_step(ex, RISKY, RISKY.steps[0], succeed(), T0, always, nothing)
    assert t.status is Status.RUNNING and t.set["cursor"] == "c"
    skipped = [e for e in t.events if e.kind is EventKind.STEP_SKIPPED]
    assert skipped and "nothing to change (already on-demand)" in skipped[0].summary
    assert not any(e.kind is EventKind.APPROVAL_REQUESTED for e in t.events)


def test_after_approval_a_changed_effect_asks_again_showing_both():
    before = Effect("changes t from 50 WCU to on-demand", "t:50->on-demand")
    after = Effect("changes t from 400 WCU to on-demand", "t:400->on-demand")
    ex = machine.apply(
        execution(RISKY),
        machine.after_step(
            execution(RISKY), RISKY, RISKY.steps[0], succeed(), T0, always, lambda e, s: before
        ),
    )
    assert ex.status is Status.AWAITING_APPROVAL and ex.approval.fingerprint == "t:50->on-demand"
    ex = machine.apply(ex, machine.decide(ex, RISKY, "U0LEAD", True, T0 + 1, always, None))
    same = machine.plan(ex, RISKY, T0 + 2, always, lambda e, s: before)
    assert isinstance(same, machine.Execute), "unchanged: the step runs"
    changed = machine.plan(ex, RISKY, T0 + 2, always, lambda e, s: after)
    assert isinstance(changed, machine.Move)
    again = machine.apply(ex, changed.transition)
    assert again.status is Status.AWAITING_APPROVAL and "scale" not in again.approved_steps
    assert "400 WCU" in again.approval.effect and "it was changes t from 50 WCU" in again.approval.effect


def test_a_rejection_computes_no_effect_and_the_worker_asks_for_the_rollback():
    rb = runbook(
        step("a"),
        step("scale", risk=Risk.HIGH),
        on_failure=(step("rollback", risk=Risk.HIGH),),
    )
    ex = run_to_end(rb, execution(rb))
    assert ex.status is Status.AWAITING_APPROVAL
    rejected = machine.apply(ex, machine.decide(ex, rb, "U0LEAD", False, T0 + 1, always, None))
    assert (
        rejected.status is Status.RUNNING
        and rejected.cursor == "rollback"
        and rejected.approval.decision == "rejected"
    )
    assert rejected.error == {
        "code": "ApprovalRejected",
        "message": "rejected scale",
        "step": "scale",
        "by": "U0LEAD",
    }
    ask = machine.plan(rejected, rb, T0 + 2, always, effect)
    assert isinstance(ask, machine.Move)
    waiting = machine.apply(rejected, ask.transition)
    assert waiting.status is Status.AWAITING_APPROVAL and waiting.approval.step_id == "rollback"


def test_the_closing_event_counts_steps_as_the_progress_bar_does():
    rb = runbook(step("a"), step("b"), step("c"))
    done = run_to_end(rb, execution(rb), results={"b": machine.Failed(T0, "ValidationException", "x", False)})
    # A run that succeeds closes with every step counted; one that failed at `b` has gone through 2.
    ok = run_to_end(rb, execution(rb))
    assert ok.timeline[-1].summary.endswith("succeeded, step 3 of 3")
    from bot.slack.render import steps_done

    assert steps_done(done) == (2, 3), "the bar counts the failed step as gone through"


def test_a_run_that_fails_at_step_one_says_step_one():
    rb = runbook(step("a"), step("b"))
    done = run_to_end(
        rb, execution(rb), results={"a": machine.Failed(T0, "ValidationException", "bad", False)}
    )
    assert done.status is Status.FAILED and done.steps["a"].outcome == "failed"
    from bot.slack.render import steps_done

    assert steps_done(done) == (1, 2)
