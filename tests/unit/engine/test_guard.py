"""Guard pauses in the state machine, pure: a guarded step that stops at a safe point waits for
the approvers to resume (from its checkpoint) or abort (on_failure runs), with the machinery of
approvals (quorum, expiry, reminder)."""

from __future__ import annotations

import pytest

from bot.actions.base import Tripped
from bot.engine import machine
from bot.engine.model import Risk
from bot.store.model import EventKind, Execution, Status
from tests.unit.engine.runbooks import T0, always, effect, runbook, step
from tests.unit.engine.test_quorum import vote, waiting

RB = runbook(
    step("detect"),
    step("replay", risk=Risk.HIGH, timeout_seconds=600),
    step("verify"),
    on_failure=(step("notify_rollback"),),
)
TRIPPED = Tripped("guard alarm acme-orders-latency is in ALARM: p99 above 250 ms", ("acme-orders-latency",))


def running(**kw) -> Execution:
    """The replay approved and one invocation in: it saved its cursor."""
    ex = vote(waiting(RB, **kw), "U0A", rb=RB) if not kw.get("quorum") else waiting(RB, **kw)
    if ex.status is Status.AWAITING_APPROVAL:  # a quorum of two
        ex = vote(vote(ex, "U0A", rb=RB), "U0B", at=T0 + 1500, rb=RB)
    plan = machine.plan(ex, RB, T0 + 2000, always, effect)
    assert isinstance(plan, machine.Execute) and plan.step.id == "replay"
    first = machine.Checkpointed(T0 + 2000, {"cursor": "page-1", "applied": 25})
    return machine.apply(ex, machine.after_step(ex, RB, plan.step, first, T0 + 3000, always, effect))


def paused(ex: Execution | None = None, at: int = T0 + 60_000) -> Execution:
    ex = ex or running()
    result = machine.Checkpointed(
        at - 1000, {"cursor": "page-2", "applied": 50}, "paused after 50", paused=TRIPPED
    )
    return machine.apply(ex, machine.after_step(ex, RB, RB.step("replay"), result, at, always, effect))


def test_a_guard_pauses_the_step_at_its_checkpoint_and_asks_to_resume_or_abort():
    ex = paused()
    assert ex.status is Status.AWAITING_APPROVAL and ex.cursor == "replay"
    assert ex.checkpoint == {"cursor": "page-2", "applied": 50}  # where it goes on from
    assert ex.approval.kind == "guard" and ex.approval.step_id == "replay" and ex.approval.decision == ""
    assert "acme-orders-latency is in ALARM: p99 above 250 ms" in ex.approval.effect
    assert "Resume goes on from where it stopped" in ex.approval.effect
    assert ex.approval.fingerprint == "acme-orders-latency"
    assert ex.approval.version == ex.version  # what the buttons carry
    event = ex.timeline[-1]
    assert event.kind is EventKind.APPROVAL_REQUESTED
    assert event.summary.startswith("paused: guard alarm acme-orders-latency is in ALARM")
    assert event.figures["guard_alarms"] == ["acme-orders-latency"]
    # Idle until someone decides; the sweeper reminds and then expires it as any approval.
    assert isinstance(machine.plan(ex, RB, T0 + 61_000, always, effect), machine.Idle)
    assert ex.due_reason == "reminder" and ex.due_at_ms == ex.approval.remind_at_ms


def test_resume_goes_on_from_the_checkpoint_with_the_time_the_step_had_left():
    ex = paused(at=T0 + 60_000)
    resumed = vote(ex, "U0B", at=T0 + 3_600_000, note="latency back to normal", rb=RB)
    assert resumed.status is Status.APPROVED and resumed.approval.decision == "approved"
    assert resumed.timeline[-1].summary == "resumed: latency back to normal"
    assert resumed.approved_steps.count("replay") == 1
    # An hour's pause does not count against the 600 s timeout: the step ran 57 s before it.
    assert resumed.step_started_at_ms == T0 + 3_600_000 - (T0 + 60_000 - ex.step_started_at_ms)
    plan = machine.plan(resumed, RB, T0 + 3_600_100, always, effect)
    assert isinstance(plan, machine.Execute) and plan.step.id == "replay"
    assert resumed.checkpoint == {"cursor": "page-2", "applied": 50}  # no approval re-asked, no restart
    assert machine.guard_accepted(resumed, RB.step("replay")) == ("acme-orders-latency",)
    done = machine.after_step(
        resumed, RB, plan.step, machine.Succeeded(T0 + 3_600_100, "replayed"), T0 + 3_700_000, always, effect
    )
    assert machine.apply(resumed, done).cursor == "verify"


def test_abort_fails_the_run_and_runs_on_failure():
    ex = paused()
    aborted = vote(ex, "U0B", approved=False, note="partner is still hurting", rb=RB)
    assert aborted.phase == "on_failure" and aborted.cursor == "notify_rollback"
    assert aborted.error["code"] == "GuardAborted" and aborted.error["reason"] == "partner is still hurting"
    assert aborted.approval.decision == "rejected"
    rejection = next(e for e in aborted.timeline if e.kind is EventKind.APPROVAL_REJECTED)
    assert rejection.summary == "aborted: partner is still hurting" and rejection.actor == "U0B"


def test_the_quorum_that_approved_the_step_decides_its_resume():
    ex = paused(running(quorum={"high": 2, "critical": 2}))
    assert ex.approval.required == 2
    one = vote(ex, "U0A", at=T0 + 70_000, rb=RB)
    assert (
        one.status is Status.AWAITING_APPROVAL and one.timeline[-1].summary == "approved (1 of 2 approvals)"
    )
    two = vote(one, "U0B", at=T0 + 80_000, rb=RB)
    assert two.status is Status.APPROVED and two.timeline[-1].summary == "resumed (2 of 2 approvals)"
    with pytest.raises(ValueError, match="decided on this approval already"):
        vote(one, "U0A", at=T0 + 90_000, rb=RB)


def test_nobody_deciding_times_the_run_out_after_the_approval_timeout():
    ex = paused()
    reminded = machine.apply(ex, machine.on_due(ex, RB, ex.approval.remind_at_ms, always, effect))
    assert reminded.timeline[-1].kind is EventKind.APPROVAL_REMINDER
    expired = machine.apply(
        reminded, machine.on_due(reminded, RB, reminded.approval.expires_at_ms, always, effect)
    )
    assert expired.error["code"] == "ApprovalExpired" and expired.phase == "on_failure"


def test_a_second_alarm_after_a_resume_pauses_again_and_accepts_all_that_fired():
    resumed = vote(paused(), "U0B", at=T0 + 100_000, rb=RB)
    again = machine.Checkpointed(
        T0 + 110_000,
        {"cursor": "page-3"},
        paused=Tripped("guard alarm acme-errors is in ALARM", ("acme-errors", "acme-orders-latency")),
    )
    ex = machine.apply(
        resumed, machine.after_step(resumed, RB, RB.step("replay"), again, T0 + 111_000, always, effect)
    )
    assert ex.status is Status.AWAITING_APPROVAL and ex.approval.kind == "guard"
    assert machine.guard_accepted(ex, RB.step("replay")) == ()  # nothing accepted until resumed
    ok = vote(ex, "U0A", at=T0 + 120_000, rb=RB)
    assert machine.guard_accepted(ok, RB.step("replay")) == ("acme-errors", "acme-orders-latency")
    assert machine.guard_accepted(ok, RB.step("verify")) == ()


def test_a_risky_steps_own_approval_is_not_a_guard():
    ex = waiting(RB)
    assert ex.approval.kind == ""
    assert machine.guard_accepted(vote(ex, "U0A", rb=RB), RB.step("replay")) == ()
