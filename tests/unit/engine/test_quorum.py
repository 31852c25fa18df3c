"""Quorum approvals in the state machine, pure: each approver decides once, a step proceeds when
its quorum is met and is rejected at the first rejection; the reminder at half the expiry."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.actions.base import Effect
from bot.engine import machine
from bot.engine.model import Risk
from bot.store.model import EventKind, Execution, Status
from tests.unit.engine.runbooks import T0, always, effect, execution, run_to_end, runbook, step

RB = runbook(step("detect"), step("replay", risk=Risk.HIGH), step("verify"))
ROLLBACK = runbook(step("detect"), step("replay", risk=Risk.HIGH), on_failure=(step("notify_rejected"),))


def waiting(rb=RB, effect_fn=effect, **kw) -> Execution:
    ex = execution(rb, approval_timeout_minutes=30, **kw)
    for _ in range(10):
        plan = machine.plan(ex, rb, T0, always, effect_fn)
        if isinstance(plan, machine.Idle):
            break
        if isinstance(plan, machine.Move):
            ex = machine.apply(ex, plan.transition)
        else:
            ex = machine.apply(
                ex, machine.after_step(ex, rb, plan.step, machine.Succeeded(T0, "ok"), T0, always, effect_fn)
            )
    assert ex.status is Status.AWAITING_APPROVAL
    return ex


def vote(ex: Execution, user: str, approved: bool = True, at: int = T0 + 1000, note: str = "", rb=RB):
    return machine.apply(ex, machine.decide(ex, rb, user, approved, at, always, effect, note=note))


def test_a_run_without_a_quorum_needs_one_approver_as_before():
    ex = waiting()
    assert ex.approval.required == 1 and ex.approval.risk == "high"
    assert vote(ex, "U0A").status is Status.APPROVED


def test_the_partners_quorum_for_the_effects_risk_is_asked_and_counted():
    ex = waiting(quorum={"high": 2, "critical": 3})
    assert ex.approval.required == 2
    assert ex.timeline[-1].summary.startswith("needs approval (2 approvers, high risk)")
    one = vote(ex, "U0A", note="looks right")
    assert one.status is Status.AWAITING_APPROVAL and one.approval.decision == ""
    assert [(v.user, v.comment) for v in one.approval.votes] == [("U0A", "looks right")]
    assert one.timeline[-1].kind is EventKind.APPROVAL_VOTED
    assert one.timeline[-1].summary == "approved (1 of 2 approvals): looks right"
    assert one.timeline[-1].figures == {"approvals": 1, "required": 2}
    two = vote(one, "U0B", at=T0 + 2000)
    assert two.status is Status.APPROVED and "replay" in two.approved_steps
    assert two.approval.decision == "approved" and two.approval.decided_by == "U0B"
    assert [v.user for v in two.approval.votes] == ["U0A", "U0B"]
    assert two.timeline[-1].kind is EventKind.APPROVAL_GRANTED
    assert two.timeline[-1].summary == "approved (2 of 2 approvals)"
    done = run_to_end(RB, two)
    assert done.status is Status.SUCCEEDED and done.steps["replay"].outcome == "succeeded"


def test_a_critical_effect_asks_for_the_critical_quorum():
    def critical(ex, s):
        return Effect("switches a 2 TB table to on-demand", fingerprint="big", risk="critical")

    ex = waiting(effect_fn=critical, quorum={"high": 1, "critical": 2})
    assert ex.approval.risk == "critical" and ex.approval.required == 2


def test_a_step_declared_critical_asks_for_the_critical_quorum_whatever_its_effect():
    rb = runbook(step("detect"), step("failover", risk=Risk.CRITICAL), step("verify"))
    ex = waiting(rb, quorum={"high": 1, "critical": 2})  # the effect itself says "high"
    assert ex.approval.step_id == "failover" and ex.approval.risk == "critical" and ex.approval.required == 2
    assert ex.timeline[-1].summary.startswith("needs approval (2 approvers, critical risk)")
    one = vote(ex, "U0A", rb=rb)
    assert one.status is Status.AWAITING_APPROVAL, "one approver is not a critical quorum"
    two = vote(one, "U0B", at=T0 + 2000, rb=rb)
    assert two.status is Status.APPROVED and "failover" in two.approved_steps
    assert run_to_end(rb, two).status is Status.SUCCEEDED


def test_each_approver_decides_once():
    one = vote(waiting(quorum={"high": 2}), "U0A")
    for approved in (True, False):
        with pytest.raises(ValueError, match="decided on this approval already"):
            machine.decide(one, RB, "U0A", approved, T0 + 2000, always, effect)


def test_the_first_rejection_ends_the_wait_even_after_an_approval():
    one = vote(waiting(rb=ROLLBACK, quorum={"high": 3}), "U0A", rb=ROLLBACK)
    no = vote(one, "U0B", approved=False, note="partner is mid-deploy", rb=ROLLBACK)
    event = next(e for e in no.timeline if e.kind is EventKind.APPROVAL_REJECTED)
    assert event.actor == "U0B" and event.summary == "rejected: partner is mid-deploy"
    assert no.error == {
        "code": "ApprovalRejected",
        "message": "rejected replay",
        "step": "replay",
        "by": "U0B",
        "reason": "partner is mid-deploy",
    }
    done = run_to_end(ROLLBACK, no)
    assert done.status is Status.FAILED and "replay" not in done.steps


def test_a_vote_and_the_reminder_are_conditional_on_the_run_still_waiting():
    ex = waiting(quorum={"high": 2})
    t = machine.decide(ex, RB, "U0A", True, T0 + 1000, always, effect)
    assert t.expect_status == frozenset({Status.AWAITING_APPROVAL}) and t.from_version == ex.version
    reminder = machine.on_due(ex, RB, T0 + 15 * 60_000, always, effect)
    assert reminder is not None and reminder.expect_status == frozenset({Status.AWAITING_APPROVAL})


def test_the_single_due_time_is_the_reminder_then_the_expiry():
    ex = waiting()
    half, full = T0 + 15 * 60_000, T0 + 30 * 60_000
    assert (ex.due_at_ms, ex.due_reason, ex.approval.remind_at_ms) == (half, "reminder", half)
    assert machine.on_due(ex, RB, half - 1, always, effect) is None
    reminded = machine.apply(ex, machine.on_due(ex, RB, half, always, effect))
    assert reminded.status is Status.AWAITING_APPROVAL
    event = reminded.timeline[-1]
    assert event.kind is EventKind.APPROVAL_REMINDER and event.step_id == "replay"
    assert "0 of 1 approval" in event.summary and "expires in 15 min" in event.summary
    assert (reminded.due_at_ms, reminded.due_reason, reminded.approval.remind_at_ms) == (full, "expiry", 0)
    assert reminded.approval.version == ex.approval.version, "the buttons posted before still decide"
    expired = machine.apply(reminded, machine.on_due(reminded, RB, full, always, effect))
    assert expired.status is Status.TIMED_OUT and expired.approval.decision == "expired"


def test_once_someone_decided_there_is_no_reminder_only_the_expiry():
    one = vote(waiting(quorum={"high": 2}), "U0A")
    assert (one.due_at_ms, one.due_reason, one.approval.remind_at_ms) == (
        one.approval.expires_at_ms,
        "expiry",
        0,
    )
    # A reminder already due when the vote landed (the sweeper's pass raced it) posts nothing.
    stale = dataclasses.replace(one, approval=dataclasses.replace(one.approval, remind_at_ms=T0 + 1))
    stale = dataclasses.replace(stale, due_at_ms=T0 + 1, due_reason="reminder")
    t = machine.on_due(stale, RB, T0 + 15 * 60_000, always, effect)
    assert t is not None and not t.events and t.set["due_at_ms"] == one.approval.expires_at_ms


def test_a_drill_is_looked_at_when_its_time_is_up_even_before_its_reminder():
    ex = waiting(drill=True, drill_until_ms=T0 + 5 * 60_000)
    assert ex.due_at_ms == T0 + 5 * 60_000
    t = machine.on_due(ex, RB, T0 + 5 * 60_000, always, effect)
    assert t is not None and t.status is Status.TIMED_OUT


@settings(max_examples=100, deadline=None)
@given(
    required=st.integers(min_value=1, max_value=5),
    decisions=st.lists(
        st.tuples(st.sampled_from(["U0A", "U0B", "U0C", "U0D", "U0E", "U0F"]), st.booleans()), max_size=8
    ),
)
def test_the_step_proceeds_exactly_when_distinct_approvals_meet_the_quorum(required, decisions):
    ex = waiting(rb=ROLLBACK, quorum={"high": required})
    approvals: set[str] = set()
    for user, approved in decisions:
        if ex.status is not Status.AWAITING_APPROVAL or ex.approval.step_id != "replay":
            break
        if ex.approval.voted(user):
            continue  # the click service refuses it before the machine sees it
        ex = vote(ex, user, approved, rb=ROLLBACK)
        if not approved:
            assert ex.error["code"] == "ApprovalRejected", "the first rejection ends the wait"
            break
        approvals.add(user)
        assert (ex.status is Status.APPROVED) == (len(approvals) >= required)
        assert len(ex.approval.votes) == len(approvals) <= required
