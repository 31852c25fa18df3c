"""A plan's state machine, pure: marks, predicted outputs, where the run would stop, no approval."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.actions.base import Effect
from bot.engine import machine, planner
from bot.engine.model import RetryPolicy, Risk, Runbook, Step
from bot.store.model import EventKind, Execution, Status, TimelineEvent
from tests.unit.engine.runbooks import T0, always, execution, runbook, step


def plan_of(rb: Runbook, **kw) -> Execution:
    """A plan of `rb` at its first step, before the worker previewed anything."""
    return execution(
        rb, **{"execution_id": "rb-planplanpl", "kind": "plan", "sla_resolution_minutes": 0, **kw}
    )


def outputs_when(expression):
    """A `when` that reads earlier steps' (predicted) outputs, as the executor's would."""

    def when(ex: Execution, s: Step) -> bool:
        if not s.when:
            return True
        return bool(expression(ex, s))

    return when


def preview(mark: str, summary: str = "ok", outputs: dict | None = None, **figures) -> machine.Succeeded:
    return machine.Succeeded(T0, summary, outputs or {}, {"plan": mark, **figures})


def walk(rb: Runbook, results: dict[str, machine.StepResult], when=always) -> Execution:
    """Drive a plan to its end: each Execute is answered from `results` (default: read ran)."""
    ex = plan_of(rb)
    now = T0
    for _ in range(50):
        now += 1000
        decision = planner.next_move(ex, rb, now, when)
        if isinstance(decision, machine.Idle):
            return ex
        if isinstance(decision, machine.Move):
            ex = machine.apply(ex, decision.transition)
            continue
        result = results.get(decision.step.id, preview("run", f"{decision.step.id} read"))
        ex = machine.apply(ex, planner.after_preview(ex, rb, decision.step, result, now, when))
    raise AssertionError("the plan never ended")


def test_a_plan_walks_every_step_with_its_mark_and_ends_succeeded():
    rb = runbook(
        step("detect"),
        step("quiet", action="succeed", when="{{ steps.detect.outputs.calm }}"),
        step("mitigate", action="dynamodb.set_capacity", risk=Risk.HIGH),
        step("verify", action="check"),
    )
    change = preview(
        "approval", "changes t from 5 WCU to on-demand", {"current": {"billing_mode": "PAY_PER_REQUEST"}}
    )
    ex = walk(
        rb,
        {"detect": preview("run", "throttled", {"calm": False}), "mitigate": change},
        when=outputs_when(lambda ex, s: ex.steps["detect"].outputs["calm"]),
    )
    assert ex.status is Status.SUCCEEDED and ex.approval is None
    marks = [(s.id, mark) for s, mark, _ in planner.marks(ex, rb)]
    assert marks == [("detect", "run"), ("quiet", "skip"), ("mitigate", "approval"), ("verify", "run")]
    skipped = next(e for e in ex.timeline if e.step_id == "quiet")
    assert skipped.summary == "would skip, because its condition is false: steps.detect.outputs.calm"
    mitigated = next(e for e in ex.timeline if e.step_id == "mitigate")
    assert mitigated.summary == "needs approval: changes t from 5 WCU to on-demand"
    assert ex.steps["mitigate"].outputs == {"current": {"billing_mode": "PAY_PER_REQUEST"}}, (
        "predicted outputs"
    )
    assert ex.timeline[0].kind is EventKind.RUN_STARTED and "plan started" in ex.timeline[0].summary
    assert ex.timeline[-1].kind is EventKind.RUN_SUCCEEDED
    assert "3 would run" not in ex.timeline[-1].summary and "1 need approval" in ex.timeline[-1].summary


def test_later_steps_see_the_predicted_outputs_of_a_change_not_applied():
    rb = runbook(
        step("mitigate", action="dynamodb.set_capacity", risk=Risk.HIGH),
        step("rollback_ready", action="check", when="{{ steps.mitigate.outputs.changed }}"),
    )
    seen = []

    def when(ex, s):
        if not s.when:
            return True
        seen.append(ex.steps["mitigate"].outputs)
        return ex.steps["mitigate"].outputs["changed"]

    ex = walk(rb, {"mitigate": preview("approval", "changes", {"changed": True, "previous": {"w": 5}})}, when)
    assert seen == [{"changed": True, "previous": {"w": 5}}]
    assert [m for _, m, _ in planner.marks(ex, rb)] == ["approval", "run"]
    held = next(e for e in ex.timeline if e.step_id == "rollback_ready")
    assert held.summary.endswith("(its condition holds: steps.mitigate.outputs.changed)")


def test_a_failing_check_says_the_run_would_stop_there_and_leaves_the_rest_not_reached():
    rb = runbook(
        step("detect"),
        step("verify", action="check"),
        step("replay", action="dynamodb.replay", risk=Risk.HIGH),
        on_failure=(step("rollback", action="dynamodb.set_capacity", risk=Risk.HIGH),),
    )
    failed = machine.Failed(T0, "CheckFailed", "some writes failed", False)
    ex = walk(rb, {"verify": failed})
    assert ex.status is Status.SUCCEEDED and ex.phase == "main", "the plan never enters on_failure"
    assert [m for _, m, _ in planner.marks(ex, rb)] == ["run", planner.STOP, planner.NOT_REACHED]
    stop = next(e for e in ex.timeline if e.step_id == "verify")
    assert (
        stop.summary
        == "the run would stop here: some writes failed; then its on_failure steps would run (rollback)"
    )
    assert "rollback" not in ex.steps and "replay" not in ex.steps
    assert "1 not reached" in ex.timeline[-1].summary


def test_a_step_that_may_fail_says_the_run_would_go_on():
    rb = runbook(step("hot", on_failure="continue"), step("after"))
    ex = walk(rb, {"hot": machine.Failed(T0, "AccessDenied", "no insight", False)})
    assert [m for _, m, _ in planner.marks(ex, rb)] == [planner.FAILS_ON, "run"]
    assert (
        next(e for e in ex.timeline if e.step_id == "hot").summary
        == "would fail: no insight; the run would go on"
    )


def test_a_retryable_error_is_retried_as_the_run_would():
    rb = runbook(step("detect", retry=RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=2)))
    ex = machine.apply(plan_of(rb), planner.next_move(plan_of(rb), rb, T0, always).transition)
    t = planner.after_preview(
        ex, rb, rb.steps[0], machine.Failed(T0, "Throttling", "slow down", True, 500), T0, always
    )
    assert t.status is Status.RUNNING and t.set["attempt"] == 2 and t.events[0].kind is EventKind.STEP_RETRY


def test_a_risky_step_the_preview_calls_a_read_still_needs_approval():
    rb = runbook(step("gate", action="chaos.effect", risk=Risk.HIGH))
    ex = walk(rb, {"gate": preview("run", "would run chaos.effect: writes the ledger")})
    event = next(e for e in ex.timeline if e.step_id == "gate")
    assert event.figures["plan"] == "approval" and event.figures["effect"].startswith(
        "would run chaos.effect"
    )


def test_a_step_declared_critical_is_planned_with_the_critical_quorum():
    rb = runbook(step("failover", action="chaos.effect", risk=Risk.CRITICAL))
    for result in (
        preview("run", "would fail over"),
        preview("approval", "fails the partner over", risk="high"),
    ):
        ex = plan_of(rb, quorum={"high": 1, "critical": 2})
        ex = machine.apply(ex, planner.next_move(ex, rb, T0, always).transition)  # RUNNING at failover
        decision = planner.next_move(ex, rb, T0 + 1, always)
        assert isinstance(decision, machine.Execute) and decision.step.id == "failover"
        event = planner.after_preview(ex, rb, decision.step, result, T0 + 2, always).events[0]
        assert event.figures["plan"] == "approval" and event.figures["risk"] == "critical", result
        assert event.summary.endswith("(critical: 2 approvers needed)"), event.summary


def test_a_cancelled_plan_ends_cancelled():
    rb = runbook(step("a"), step("b"))
    ex = machine.apply(plan_of(rb), planner.next_move(plan_of(rb), rb, T0, always).transition)
    ex = dataclasses.replace(ex, cancel_requested_by="U0REQ")
    t = planner.next_move(ex, rb, T0 + 1, always).transition
    assert t.status is Status.CANCELLED and t.events[-1].kind is EventKind.RUN_CANCELLED


def test_a_plan_whose_worker_keeps_stopping_says_where_the_run_would_stop():
    rb = runbook(step("slow", action="dynamodb.query"))
    ex = machine.apply(plan_of(rb), planner.next_move(plan_of(rb), rb, T0, always).transition)
    ex = dataclasses.replace(ex, resumes=machine.MAX_RESUMES, due_at_ms=T0, due_reason="stuck")
    t = planner.on_due(ex, rb, T0 + 1, always)
    assert t is not None and t.status is Status.SUCCEEDED
    assert t.events[0].summary.startswith("the run would stop here: step slow made no progress")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["run", "approval", "skip", "fail", "retry"]), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_any_plan_ends_without_asking_for_approval_or_taking_the_failure_path(outcomes, conditions):
    steps = [
        step(
            f"s{i}",
            risk=Risk.HIGH if o == "approval" else Risk.LOW,
            when="{{ x }}" if not conditions[i] else None,
        )
        for i, o in enumerate(outcomes)
    ]
    rb = runbook(*steps, on_failure=(step("undo"),))
    results: dict[str, machine.StepResult] = {}
    for i, o in enumerate(outcomes):
        if o == "fail":
            results[f"s{i}"] = machine.Failed(T0, "CheckFailed", "no", False)
        elif o == "retry":
            results[f"s{i}"] = machine.Failed(T0, "Throttling", "slow", True, 10)
        else:
            results[f"s{i}"] = preview(o)
    ex = walk(rb, results, when=lambda ex, s: s.when is None)
    assert ex.status is Status.SUCCEEDED
    assert ex.approval is None and not ex.approved_steps and ex.phase == "main" and "undo" not in ex.steps
    assert [e.seq for e in ex.timeline] == list(range(1, len(ex.timeline) + 1))


def event(step_id: str, effect: str, fingerprint: str) -> TimelineEvent:
    return TimelineEvent(
        3,
        T0,
        EventKind.STEP_FINISHED,
        f"needs approval: {effect}",
        step_id,
        figures={"plan": "approval", "effect": effect, "fingerprint": fingerprint},
    )


def test_a_run_from_a_plan_shows_the_planned_effect_beside_a_changed_one():
    plan = plan_of(
        runbook(step("m")), timeline=(event("m", "changes t from 50 WCU to on-demand", "t:50->od"),)
    )
    now = Effect("changes t from 7 WCU to on-demand", "t:7->od")
    shown = planner.beside_plan(now, plan, "m")
    assert shown.text == (
        "changes t from 7 WCU to on-demand — changed since plan rb-planplanpl, which showed: "
        "changes t from 50 WCU to on-demand"
    )
    assert shown.fingerprint == "t:7->od", "the recheck after approval compares what is now"
    same = planner.beside_plan(Effect("changes t from 50 WCU to on-demand", "t:50->od"), plan, "m")
    assert same.text.endswith("(as planned in rb-planplanpl)")
    unplanned = planner.beside_plan(now, plan, "other")
    assert unplanned.text.endswith("(plan rb-planplanpl did not reach this step)")
    assert planner.beside_plan(now, None, "m") == now


def test_a_step_the_guard_refused_is_where_the_plan_cannot_see_not_where_the_run_would_stop():
    rb = runbook(step("odd", action="custom.write"), step("after"))
    refused = machine.Failed(T0, "PlanRefusesWrite", "a plan tried PutItem, which is not a read", False)
    ex = walk(rb, {"odd": refused})
    assert [m for _, m, _ in planner.marks(ex, rb)] == [planner.UNSEEN, planner.NOT_REACHED]
    assert "the plan cannot preview this step" in next(e for e in ex.timeline if e.step_id == "odd").summary
    assert ex.status is Status.SUCCEEDED


def test_an_approval_the_run_needs_a_quorum_for_says_how_many_approvers():
    rb = runbook(step("mitigate", action="dynamodb.set_capacity", risk=Risk.HIGH), step("after"))
    ex = plan_of(rb, quorum={"high": 1, "critical": 2})
    now = T0
    for _ in range(10):
        now += 1
        decision = planner.next_move(ex, rb, now, always)
        if isinstance(decision, machine.Idle):
            break
        if isinstance(decision, machine.Move):
            ex = machine.apply(ex, decision.transition)
            continue
        result = (
            preview("approval", "changes t to on-demand", risk="critical")
            if decision.step.id == "mitigate"
            else preview("run")
        )
        ex = machine.apply(ex, planner.after_preview(ex, rb, decision.step, result, now, always))
    mitigated = next(e for e in ex.timeline if e.step_id == "mitigate")
    assert mitigated.summary == "needs approval: changes t to on-demand (critical: 2 approvers needed)"
