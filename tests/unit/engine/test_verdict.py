"""A drill's verdict, and its time limit in the state machine."""

from __future__ import annotations

import dataclasses

from bot.actions.base import Effect
from bot.engine import machine
from bot.engine.model import Risk, Runbook, Step
from bot.engine.verdict import judge
from bot.store.model import EventKind, Execution, Status, StepRecord, TimelineEvent

T0 = 1_700_000_000_000
RUNBOOK = Runbook(
    "throttle",
    "Throttling",
    "",
    (),
    (
        Step(id="detect", action="cloudwatch.metrics"),
        Step(id="replay", action="dynamodb.replay", risk=Risk.HIGH),
        Step(id="verify", action="check"),
    ),
    (Step(id="rollback", action="notify"),),
    "v1",
)


def drill(**kw) -> Execution:
    base = dict(
        execution_id="rb-drill",
        runbook="throttle",
        runbook_version="v1",
        partner="partner-acme",
        status=Status.RUNNING,
        version=3,
        params={},
        requested_by="U0DRILLBOT",
        channel="C0ACMEOPS",
        created_at_ms=T0,
        updated_at_ms=T0,
        trigger="drill",
        drill=True,
        drill_faults={"throttle": 0.3},
        drill_until_ms=T0 + 120_000,
        cursor="replay",
        approved_steps=("replay",),
        total_steps=3,
    )
    base.update(kw)
    return Execution(**base)


def record(step_id: str, outcome: str = "succeeded", attempts: int = 1) -> StepRecord:
    return StepRecord(step_id, outcome, attempts, T0, T0 + 1)


def test_a_drill_passes_when_detection_and_recovery_worked_and_names_absorbed_faults():
    retry = TimelineEvent(
        seq=2,
        at_ms=T0,
        kind=EventKind.STEP_RETRY,
        summary="retry",
        step_id="replay",
        error_code="ProvisionedThroughputExceededException",
    )
    ex = drill(
        status=Status.SUCCEEDED,
        steps={s: record(s) for s in ("detect", "replay", "verify")},
        timeline=(retry,),
    )
    report = judge(ex, RUNBOOK)
    assert report.passed
    assert (
        "drill PASSED" in report.summary() and "ProvisionedThroughputExceededException ×1" in report.summary()
    )


def test_a_drill_whose_replay_failed_says_recovery_did_not_work():
    ex = drill(
        status=Status.FAILED, steps={"detect": record("detect"), "replay": record("replay", "failed", 3)}
    )
    report = judge(ex, RUNBOOK)
    assert not report.passed and report.detection_ok and not report.recovery_ok
    assert "recovery did not work (0 of 1 steps)" in report.summary()
    assert any("verify" in line and "not reached" in line for line in report.lines())


def no_when(ex, step):
    return True


def effect(ex, step):
    return Effect("runs")


def test_a_drill_past_its_time_limit_ends_timed_out_through_its_rollback():
    ex = drill(steps={"detect": record("detect")})
    assert isinstance(machine.plan(ex, RUNBOOK, T0 + 60_000, no_when, effect), machine.Execute)
    late = machine.plan(ex, RUNBOOK, T0 + 120_000, no_when, effect)
    assert isinstance(late, machine.Move)
    t = late.transition
    assert t.set["phase"] == "on_failure" and t.set["error"]["code"] == "DrillTimeLimit"
    after = machine.apply(ex, t)
    assert after.cursor == "rollback"
    # The rollback itself is not cut short by the limit.
    assert isinstance(machine.plan(after, RUNBOOK, T0 + 200_000, no_when, effect), machine.Execute)


def test_a_drill_waiting_for_approval_is_due_when_its_time_is_up():
    ex = drill(status=Status.RUNNING, cursor="detect", approved_steps=())
    t = machine.after_step(
        ex, RUNBOOK, RUNBOOK.steps[0], machine.Succeeded(T0, "ok"), T0 + 1_000, no_when, effect
    )
    waiting = machine.apply(ex, t)
    assert waiting.status is Status.AWAITING_APPROVAL
    assert waiting.due_at_ms == T0 + 120_000  # clamped from the 30-minute approval expiry
    ended = machine.on_due(waiting, RUNBOOK, T0 + 120_000, no_when, effect)
    assert ended is not None and ended.set["error"]["code"] == "DrillTimeLimit"
    assert machine.apply(waiting, ended).approval.decision == "expired"


def test_a_real_run_has_no_time_limit():
    ex = dataclasses.replace(drill(), drill=False, drill_until_ms=None)
    assert isinstance(machine.plan(ex, RUNBOOK, T0 + 10**9, no_when, effect), machine.Execute)


def paused_event(seq: int = 3) -> TimelineEvent:
    return TimelineEvent(
        seq=seq,
        at_ms=T0,
        kind=EventKind.APPROVAL_REQUESTED,
        summary="paused: drill: injected guard alarm drill-injected-guard is in ALARM; resume or abort?",
        step_id="replay",
        figures={"expires_at_ms": T0 + 60_000, "guard_alarms": ["drill-injected-guard"]},
    )


def test_an_injected_guard_that_paused_the_run_is_reported_and_passes():
    ex = drill(
        status=Status.SUCCEEDED,
        drill_faults={"guard": 1.0},
        steps={s: record(s) for s in ("detect", "replay", "verify")},
        timeline=(paused_event(),),
    )
    report = judge(ex, RUNBOOK)
    assert report.passed and report.guard_pauses == 1
    assert report.summary().endswith("; a guard alarm paused the run once")


def test_an_injected_guard_that_never_paused_a_replay_that_ran_fails_the_drill():
    ex = drill(
        status=Status.SUCCEEDED,
        drill_faults={"guard": 1.0},
        steps={s: record(s) for s in ("detect", "replay", "verify")},
    )
    report = judge(ex, RUNBOOK)
    assert not report.passed and not report.guard_ok
    assert "drill FAILED" in report.summary()
    assert report.summary().endswith("; the injected guard alarm never paused the run")


def test_an_injected_guard_without_a_guarded_step_running_is_not_held_against_the_drill():
    ex = drill(
        status=Status.SUCCEEDED,
        drill_faults={"guard": 1.0},
        steps={"detect": record("detect"), "replay": record("replay", "skipped"), "verify": record("verify")},
    )
    report = judge(ex, RUNBOOK)
    assert report.passed and "no guarded step ran" in report.summary()


def test_a_drill_without_a_guard_fault_says_nothing_of_guards():
    ex = drill(status=Status.SUCCEEDED, steps={s: record(s) for s in ("detect", "replay", "verify")})
    assert "guard" not in judge(ex, RUNBOOK).summary()
