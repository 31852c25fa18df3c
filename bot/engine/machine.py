"""The state machine: pure decisions over an execution, one `Transition` per conditional write.

Nothing here does I/O. The worker asks `plan()` what a state calls for, runs the step if it must,
and hands the result to `after_step()`; the ingress calls `decide()` for approval clicks and the
sweeper calls `on_due()`. Each returns a `Transition` that the store writes conditionally on
`from_version` (CONTRACT §4). `when` conditions and approval texts need expressions and AWS
reads, so the caller passes them in as functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

from bot.actions.base import Effect, Tripped
from bot.engine.model import Risk, Runbook, Step
from bot.store.model import (
    ACTIVE,
    TERMINAL,
    Approval,
    EventKind,
    Execution,
    Status,
    StepRecord,
    TimelineEvent,
    Vote,
)

GRACE_MS = 60_000  # at most this long beyond a step's timeout before the sweeper calls its worker stopped
MIN_GRACE_MS = 10_000  # short steps get a grace as long as themselves, but at least this
MAX_RESUMES = 3  # restarts of one step after its worker stopped, before the step fails
RETENTION_SECONDS = 90 * 24 * 3600  # finished executions stay this long (TTL)
# How many steps one transition may walk over (skipped by `when`, or nothing to change) before
# it gives up: bounds the walk; the validator forbids cycles anyway. The planner walks the same.
SKIP_LIMIT = 1000

WhenFn = Callable[[Execution, Step], bool]
# None where effects must not be computed (the ingress, the sweeper): a risky step is then only
# entered, and the worker asks for its approval with the effect it computes itself.
EffectFn = Callable[[Execution, Step], Effect] | None


class Changes(TypedDict, total=False):
    """The Execution fields a transition may set (None removes the attribute). Typed, so mypy
    checks every field a transition names against the Execution it is applied to."""

    cursor: str | None
    phase: str
    attempt: int
    step_started_at_ms: int
    checkpoint: dict[str, Any] | None
    approval: Approval | None
    approved_steps: tuple[str, ...]
    error: dict[str, str]
    due_at_ms: int | None
    due_reason: str
    resumes: int
    sla_warned: bool
    end_status: str
    expires_at: int | None
    reopened: int
    cancel_requested_by: str
    pause_request: dict[str, Any] | None


@dataclass(frozen=True)
class Transition:
    """One move of an execution: applied as one `UpdateItem` conditioned on `from_version`."""

    from_version: int
    at_ms: int
    status: Status
    set: Changes = field(default_factory=Changes)  # top-level Execution fields, new values
    steps: tuple[StepRecord, ...] = ()  # step records to add or replace
    events: tuple[TimelineEvent, ...] = ()  # appended to the timeline, seq already assigned
    expect_status: frozenset[Status] | None = None  # extra condition on the status written over

    @property
    def to_version(self) -> int:
        return self.from_version + 1


# What a state calls for, as `plan()` sees it.
@dataclass(frozen=True)
class Idle:
    reason: str


@dataclass(frozen=True)
class Move:
    transition: Transition


@dataclass(frozen=True)
class Execute:
    step: Step


Plan = Idle | Move | Execute


# What became of a step the worker ran.
@dataclass(frozen=True)
class Succeeded:
    started_ms: int
    summary: str
    outputs: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    end_run: bool = False  # a `succeed` step: the run ends here, successfully


@dataclass(frozen=True)
class Checkpointed:
    started_ms: int
    checkpoint: dict[str, Any]
    summary: str = ""
    wake_in_ms: int | None = None  # sleep until then (a wait); None: carry on with the next record
    paused: Tripped | None = None  # stopped at a safe point by a guard: the approvers resume or abort


@dataclass(frozen=True)
class Failed:
    started_ms: int
    code: str
    message: str
    retryable: bool
    retry_in_ms: int = 0  # backoff before the next attempt, when it is retried


StepResult = Succeeded | Checkpointed | Failed


def apply(ex: Execution, t: Transition) -> Execution:
    """The execution as it stands after `t` (what the store's conditional write produces)."""
    steps = dict(ex.steps)
    for record in t.steps:
        steps[record.step_id] = record
    return dataclasses.replace(
        ex,
        **t.set,
        status=t.status,
        version=t.to_version,
        updated_at_ms=t.at_ms,
        steps=steps,
        timeline=ex.timeline + t.events,
    )


def idle_reason(ex: Execution, now_ms: int) -> str | None:
    """Why this state calls for nothing now, or None when it may (no I/O: the worker's first look)."""
    if ex.status in TERMINAL:
        return f"run already {ex.status.value}"
    if ex.cancel_requested_by or _drill_over(ex, now_ms):
        return None
    if ex.status is Status.AWAITING_APPROVAL:
        return "waiting for an approver"
    if ex.due_reason == "wake" and ex.due_at_ms is not None and ex.due_at_ms > now_ms:
        return "sleeping until its wake time"
    return None


def plan(ex: Execution, runbook: Runbook, now_ms: int, when: WhenFn, effect: EffectFn) -> Plan:
    """What the worker must do for this state of `ex`, if anything."""
    idle = idle_reason(ex, now_ms)
    if idle:
        return Idle(idle)
    if ex.cancel_requested_by:
        return Move(_end(ex, runbook, now_ms, Status.CANCELLED, []))
    if _drill_over(ex, now_ms):
        return Move(_drill_time_limit(ex, runbook, now_ms, when, effect))
    if ex.status is Status.PENDING:
        first = runbook.step(ex.cursor) if ex.cursor else None
        if first is None or first.risk.asks_approval or not when(ex, first):
            return Move(start(ex, runbook, now_ms, when, effect))
        return Execute(first)  # RUN_STARTED rides on the first step's commit: one write fewer
    if ex.cursor is None:
        return Move(_finish(ex, runbook, now_ms, []))
    step = runbook.step(ex.cursor)
    if step.risk.asks_approval and step.id not in ex.approved_steps:
        # Entered where effects are not computed (a rejection, an expiry): ask for approval now.
        return Move(_enter(ex, runbook, step.id, now_ms, [], [], when, effect))
    if step.risk.asks_approval and effect is not None and _first_start(ex, step):
        recheck = _recheck_approved(ex, runbook, step, now_ms, when, effect)
        if recheck is not None:
            return Move(recheck)
    return Execute(step)


def start(ex: Execution, runbook: Runbook, now_ms: int, when: WhenFn, effect: EffectFn) -> Transition:
    """PENDING → the first runnable step (RUNNING), its approval, or the end."""
    events = [
        timeline_event(
            ex, 0, now_ms, EventKind.RUN_STARTED, _started_summary(ex, runbook), actor=ex.requested_by
        )
    ]
    return _enter(
        ex, runbook, runbook.steps[0].id if runbook.steps else None, now_ms, events, [], when, effect
    )


def after_step(
    ex: Execution,
    runbook: Runbook,
    step: Step,
    result: StepResult,
    now_ms: int,
    when: WhenFn,
    effect: EffectFn,
) -> Transition:
    """Commit what the worker found when it ran `step` (the step at `ex.cursor`)."""
    events: list[TimelineEvent] = []
    if ex.status is Status.PENDING:
        events.append(
            timeline_event(
                ex, 0, now_ms, EventKind.RUN_STARTED, _started_summary(ex, runbook), actor=ex.requested_by
            )
        )
    first_started = ex.step_started_at_ms or result.started_ms
    if isinstance(result, Succeeded):
        record = StepRecord(step.id, "succeeded", ex.attempt, first_started, now_ms, result.outputs)
        events.append(
            timeline_event(
                ex,
                len(events),
                now_ms,
                EventKind.STEP_FINISHED,
                result.summary or f"{step.id} finished",
                step_id=step.id,
                duration_ms=now_ms - first_started,
                figures=result.figures,
            )
        )
        following = None if result.end_run else next_id(runbook, step, ex.phase)
        return _enter(ex, runbook, following, now_ms, events, [record], when, effect)

    if isinstance(result, Checkpointed):
        if now_ms - first_started > step.timeout_seconds * 1000:
            return after_step(
                ex,
                runbook,
                step,
                Failed(
                    result.started_ms,
                    "StepTimedOut",
                    f"step {step.id} ran longer than its timeout of {step.timeout_seconds}s",
                    False,
                ),
                now_ms,
                when,
                effect,
            )
        if ex.checkpoint is None and not ex.step_started_at_ms:
            events.append(
                timeline_event(
                    ex,
                    len(events),
                    now_ms,
                    EventKind.STEP_STARTED,
                    result.summary or f"{step.id} started",
                    step_id=step.id,
                )
            )
        if result.paused is not None:
            return _guard_pause(ex, step, result, result.paused, now_ms, first_started, events)
        due = _wake(now_ms + result.wake_in_ms) if result.wake_in_ms is not None else stuck(step, now_ms)
        return _transition(
            ex,
            now_ms,
            Status.RUNNING,
            events,
            [],
            {"checkpoint": result.checkpoint, "step_started_at_ms": first_started, **due},
        )

    # Failed
    if result.retryable and ex.attempt < step.retry.max_attempts:
        events.append(
            timeline_event(
                ex,
                len(events),
                now_ms,
                EventKind.STEP_RETRY,
                f"{step.id} failed with {result.code}; attempt {ex.attempt + 1} of "
                f"{step.retry.max_attempts} in {result.retry_in_ms / 1000:.1f}s",
                step_id=step.id,
                error_code=result.code,
                figures={"attempt": ex.attempt},
            )
        )
        return _transition(
            ex,
            now_ms,
            Status.RUNNING,
            events,
            [],
            {
                "attempt": ex.attempt + 1,
                "step_started_at_ms": first_started,
                **_wake(now_ms + result.retry_in_ms),
            },
        )
    record = StepRecord(
        step.id,
        "failed",
        ex.attempt,
        first_started,
        now_ms,
        error_code=result.code,
        error_message=result.message,
    )
    events.append(
        timeline_event(
            ex,
            len(events),
            now_ms,
            EventKind.STEP_FAILED,
            result.message,
            step_id=step.id,
            duration_ms=now_ms - first_started,
            error_code=result.code,
        )
    )
    if step.on_failure == "continue" or not step.is_critical:
        return _enter(ex, runbook, next_id(runbook, step, ex.phase), now_ms, events, [record], when, effect)
    if step.on_failure.startswith("step:"):
        return _enter(ex, runbook, step.on_failure[5:], now_ms, events, [record], when, effect)
    end_status = Status.TIMED_OUT if result.code == "ApprovalExpired" else Status.FAILED
    return _fail_run(
        ex,
        runbook,
        now_ms,
        events,
        [record],
        end_status,
        {"code": result.code, "message": result.message, "step": step.id},
        when,
        effect,
    )


def decide(
    ex: Execution,
    runbook: Runbook,
    approver: str,
    approved: bool,
    now_ms: int,
    when: WhenFn,
    effect: EffectFn,
    *,
    note: str = "",
) -> Transition:
    """An approver's decision on the pending approval (the caller has checked who may decide).

    Each approver decides once: an approval adds their vote, and the step proceeds once the
    approval's quorum of distinct approvers is met; a rejection ends the wait at once. `note` is
    the approver's comment, or the rejecter's reason."""
    if ex.status is not Status.AWAITING_APPROVAL or ex.approval is None:
        raise ValueError("decide() needs an execution that is awaiting approval")
    if ex.approval.voted(approver):
        raise ValueError(f"{approver} has decided on this approval already")
    step = runbook.step(ex.approval.step_id)
    if approved:
        return _approve(ex, step, approver, now_ms, note)
    approval = dataclasses.replace(
        ex.approval, decision="rejected", decided_by=approver, decided_at_ms=now_ms, reason=note
    )
    guard = approval.kind == "guard"
    verb = "aborted" if guard else "rejected"
    summary = f"{verb}: {note}" if note else verb
    event = timeline_event(
        ex, 0, now_ms, EventKind.APPROVAL_REJECTED, summary, step_id=step.id, actor=approver
    )
    rejected = dataclasses.replace(ex, approval=approval)
    error = {
        "code": "GuardAborted" if guard else "ApprovalRejected",
        "message": f"{verb} {step.label}" + (" after its guard paused it" if guard else ""),
        "step": step.id,
        "by": approver,
    }
    if note:
        error["reason"] = note
    t = _fail_run(rejected, runbook, now_ms, [event], [], Status.FAILED, error, when, effect)
    return _amend(t, frozenset({Status.AWAITING_APPROVAL}), approval=approval)


def quorum_text(approval: Approval) -> str:
    """ "1 of 2 approvals": where the pending approval stands."""
    return f"{len(approval.votes)} of {approval.required} approval{'s' if approval.required != 1 else ''}"


def _approve(ex: Execution, step: Step, approver: str, now_ms: int, comment: str) -> Transition:
    """One more vote: the step is APPROVED once the quorum is met, else the run keeps waiting."""
    assert ex.approval is not None
    approval = dataclasses.replace(ex.approval, votes=(*ex.approval.votes, Vote(approver, now_ms, comment)))
    said = f": {comment}" if comment else ""
    if len(approval.votes) < approval.required:
        # Someone decided: no reminder any more, only the expiry.
        pending = dataclasses.replace(approval, remind_at_ms=0)
        event = timeline_event(
            ex,
            0,
            now_ms,
            EventKind.APPROVAL_VOTED,
            f"approved ({quorum_text(pending)}){said}",
            step_id=step.id,
            actor=approver,
            figures={"approvals": len(pending.votes), "required": pending.required},
        )
        return _transition(
            ex,
            now_ms,
            Status.AWAITING_APPROVAL,
            [event],
            [],
            {"approval": pending, "due_at_ms": pending.expires_at_ms, "due_reason": "expiry"},
            expect=frozenset({Status.AWAITING_APPROVAL}),
        )
    approval = dataclasses.replace(
        approval, decision="approved", decided_by=approver, decided_at_ms=now_ms, remind_at_ms=0
    )
    verb = "resumed" if approval.kind == "guard" else "approved"
    summary = f"{verb} ({quorum_text(approval)}){said}" if approval.required > 1 else f"{verb}{said}"
    event = timeline_event(
        ex, 0, now_ms, EventKind.APPROVAL_GRANTED, summary, step_id=step.id, actor=approver
    )
    changes: Changes = {
        "approval": approval,
        "approved_steps": tuple(dict.fromkeys((*ex.approved_steps, step.id))),
        **stuck(step, now_ms),
    }
    if approval.kind == "guard" and ex.step_started_at_ms:
        # The pause does not count against the step's timeout: it goes on with the time it had left.
        changes["step_started_at_ms"] = now_ms - max(0, approval.requested_at_ms - ex.step_started_at_ms)
    return _transition(
        ex, now_ms, Status.APPROVED, [event], [], changes, expect=frozenset({Status.AWAITING_APPROVAL})
    )


def _remind(ex: Execution, step: Step, now_ms: int) -> Transition:
    """Half the expiry passed: remind the approvers (if nobody decided) and wait for the expiry."""
    assert ex.approval is not None
    approval = dataclasses.replace(ex.approval, remind_at_ms=0)
    events = []
    if not approval.votes:
        left_min = max(1, (approval.expires_at_ms - now_ms + 59_999) // 60_000)
        events.append(
            timeline_event(
                ex,
                0,
                now_ms,
                EventKind.APPROVAL_REMINDER,
                f"still waiting for approval ({quorum_text(approval)}); it expires in {left_min} min",
                step_id=step.id,
                figures={"expires_at_ms": approval.expires_at_ms},
            )
        )
    return _transition(
        ex,
        now_ms,
        Status.AWAITING_APPROVAL,
        events,
        [],
        {"approval": approval, "due_at_ms": approval.expires_at_ms, "due_reason": "expiry"},
        expect=frozenset({Status.AWAITING_APPROVAL}),
    )


def resume(ex: Execution, runbook: Runbook, by: str, now_ms: int) -> Transition:
    """`/runbook retry`: an ended run (FAILED, TIMED_OUT) continues at the step it failed at.

    The same run goes on (id, thread, version). Completed steps keep their records and outputs;
    the failed step starts again at attempt 1 under a new idempotency key (`reopened` counts up);
    no approval carries over, so a risky step asks again; the retention TTL goes. Nothing here
    evaluates `when` or effects: the worker's `plan()` asks for a risky step's approval with the
    effect it computes. Raises ValueError for a run that did not end FAILED or TIMED_OUT at a step
    of `runbook` (`bot.slack.retry.refusal` tells people why).
    """
    from bot.engine.resumes import RESUMABLE, kept_steps, resume_point

    step = resume_point(ex, runbook)
    if ex.status not in RESUMABLE or step is None:
        raise ValueError(f"resume() needs a run that ended FAILED or TIMED_OUT at a step, not {ex.status}")
    code = (ex.error or {}).get("code", "")
    kept = kept_steps(ex, runbook, step)
    event = timeline_event(
        ex,
        0,
        now_ms,
        EventKind.RUN_RESUMED,
        f"resumed from {step.label}"
        + (f" (it failed with {code})" if code else "")
        + f"; {kept} completed step{'s' if kept != 1 else ''} kept, a fresh attempt of {step.id}",
        step_id=step.id,
        actor=by,
        figures={"resumed": ex.reopened + 1, "was": ex.status.value},
    )
    changes: Changes = {
        "cursor": step.id,
        "phase": "main",
        "attempt": 1,
        "checkpoint": None,
        "step_started_at_ms": 0,
        "resumes": 0,
        "approval": None,
        "approved_steps": (),
        "error": {},
        "end_status": "",
        "cancel_requested_by": "",
        "expires_at": None,
        "reopened": ex.reopened + 1,
        **stuck(step, now_ms),
    }
    return _transition(ex, now_ms, Status.RUNNING, [event], [], changes, expect=RESUMABLE)


def on_due(ex: Execution, runbook: Runbook, now_ms: int, when: WhenFn, effect: EffectFn) -> Transition | None:
    """The sweeper's move for an execution whose `due_at_ms` has passed, or None if nothing is due."""
    if ex.status in TERMINAL or ex.due_at_ms is None or ex.due_at_ms > now_ms:
        return None
    if _drill_over(ex, now_ms):
        return _drill_time_limit(ex, runbook, now_ms, when, effect)
    if ex.status is Status.AWAITING_APPROVAL and ex.approval is not None:
        step = runbook.step(ex.approval.step_id)
        if ex.approval.remind_at_ms and now_ms < ex.approval.expires_at_ms:
            return _remind(ex, step, now_ms)
        approval = dataclasses.replace(ex.approval, decision="expired", decided_at_ms=now_ms)
        event = timeline_event(
            ex,
            0,
            now_ms,
            EventKind.APPROVAL_EXPIRED,
            f"no approver decided on {step.label} in time",
            step_id=step.id,
        )
        t = _fail_run(
            dataclasses.replace(ex, approval=approval),
            runbook,
            now_ms,
            [event],
            [],
            Status.TIMED_OUT,
            {"code": "ApprovalExpired", "message": f"approval of {step.id} expired", "step": step.id},
            when,
            effect,
        )
        return _amend(t, frozenset({Status.AWAITING_APPROVAL}), approval=approval)
    if ex.cursor is None:
        return _transition(ex, now_ms, ex.status, [], [], no_due())
    current = runbook.step(ex.cursor)
    if ex.due_reason == "wake":
        # Wake a sleeping step (a wait, a retry backoff): a new version is a new stream record.
        return _transition(ex, now_ms, ex.status, [], [], stuck(current, now_ms))
    # Stuck: no progress by the step's deadline, so its worker stopped (crash, lost record).
    if ex.resumes >= MAX_RESUMES:
        return after_step(
            ex,
            runbook,
            current,
            Failed(
                now_ms,
                "StepTimedOut",
                f"step {current.id} made no progress after {MAX_RESUMES} restarts",
                False,
            ),
            now_ms,
            when,
            effect,
        )
    event = timeline_event(
        ex,
        0,
        now_ms,
        EventKind.STEP_RETRY,
        f"{current.id} made no progress for {(now_ms - ex.updated_at_ms) // 1000}s; restarting it "
        f"({ex.resumes + 1} of {MAX_RESUMES})",
        step_id=current.id,
        error_code="StepTimedOut",
    )
    return _transition(
        ex, now_ms, ex.status, [event], [], {"resumes": ex.resumes + 1, **stuck(current, now_ms)}
    )


# -- internals ------------------------------------------------------------------------------


def _amend(t: Transition, expect: frozenset[Status] | None = None, **more: Unpack[Changes]) -> Transition:
    """`t` with more fields set (and, given `expect`, a narrower condition on the status it overwrites)."""
    changes: Changes = {**t.set, **more}
    return dataclasses.replace(
        t, set=changes, expect_status=expect if expect is not None else t.expect_status
    )


def _drill_over(ex: Execution, now_ms: int) -> bool:
    """A drill past its time limit (its rollback path, once started, still runs to the end)."""
    return (
        ex.drill
        and ex.drill_until_ms is not None
        and now_ms >= ex.drill_until_ms
        and ex.phase == "main"
        and ex.status not in TERMINAL
    )


def _drill_time_limit(
    ex: Execution, runbook: Runbook, now_ms: int, when: WhenFn, effect: EffectFn
) -> Transition:
    minutes = max(1, ((ex.drill_until_ms or now_ms) - ex.created_at_ms) // 60_000)
    error = {"code": "DrillTimeLimit", "message": f"the drill reached its {minutes}-minute time limit"}
    if ex.cursor:
        error["step"] = ex.cursor
    pending = ex.approval if ex.status is Status.AWAITING_APPROVAL else None
    if pending is not None:
        ex = dataclasses.replace(
            ex, approval=dataclasses.replace(pending, decision="expired", decided_at_ms=now_ms)
        )
    t = _fail_run(ex, runbook, now_ms, [], [], Status.TIMED_OUT, error, when, effect)
    if pending is not None:
        return _amend(t, frozenset({ex.status}), approval=ex.approval)
    return _amend(t, frozenset({ex.status}))


def _enter(
    ex: Execution,
    runbook: Runbook,
    step_id: str | None,
    now_ms: int,
    events: list[TimelineEvent],
    records: list[StepRecord],
    when: WhenFn,
    effect: EffectFn,
) -> Transition:
    """Move the cursor to `step_id`, skipping steps whose `when` is false, asking for approval."""
    view = view_with_records(ex, records, step_id)
    planned: Effect | None = None
    for _ in range(SKIP_LIMIT):
        if step_id is None:
            return _finish(view, runbook, now_ms, events, records)
        step = runbook.step(step_id)
        skipped = ""
        if not when(view, step):
            skipped = "skipped: its condition is false"
        elif step.risk.asks_approval and step.id not in ex.approved_steps and effect is not None:
            planned = effect(view, step)
            if planned.changes:
                break
            skipped = f"skipped: nothing to change ({planned.reason or planned.text})"
            planned = None
        else:
            break
        records.append(StepRecord(step.id, "skipped", 0, now_ms, now_ms))
        events.append(
            timeline_event(ex, len(events), now_ms, EventKind.STEP_SKIPPED, skipped, step_id=step.id)
        )
        step_id = next_id(runbook, step, ex.phase)
        view = view_with_records(ex, records, step_id)
    else:
        raise ValueError(f"runbook {runbook.name} skips steps in a cycle")

    fresh: Changes = {
        "cursor": step.id,
        "attempt": 1,
        "checkpoint": None,
        "step_started_at_ms": 0,
        "resumes": 0,
    }
    if planned is not None:
        return _ask_approval(ex, step, planned, now_ms, events, records, fresh)
    return _transition(ex, now_ms, Status.RUNNING, events, records, {**fresh, **stuck(step, now_ms)})


def _ask_approval(
    ex: Execution,
    step: Step,
    planned: Effect,
    now_ms: int,
    events: list[TimelineEvent],
    records: list[StepRecord],
    changes: Changes,
    *,
    changed_from: str = "",
) -> Transition:
    timeout_ms = _approval_timeout_ms(ex)
    expires = now_ms + timeout_ms
    text = planned.text
    if changed_from:
        text = f"{planned.text} (changed since it was approved: it was {changed_from})"
    # The step's own level, or the action's finding that this effect is critical: the higher wins.
    risk = "critical" if planned.risk == "critical" or step.risk is Risk.CRITICAL else "high"
    approval = Approval(
        step.id,
        now_ms,
        expires,
        text,
        fingerprint=planned.fingerprint,
        required=max(1, int(ex.quorum.get(risk, 1))),
        risk=risk,
        version=ex.version + 1,
        remind_at_ms=now_ms + timeout_ms // 2,
    )
    needs = f" ({approval.required} approvers, {risk} risk)" if approval.required > 1 else ""
    events.append(
        timeline_event(
            ex,
            len(events),
            now_ms,
            EventKind.APPROVAL_REQUESTED,
            f"needs approval{needs}: {approval.effect}",
            step_id=step.id,
            figures={"expires_at_ms": expires},
        )
    )
    # One due time: the reminder first (half the expiry), then the expiry itself.
    return _transition(
        ex,
        now_ms,
        Status.AWAITING_APPROVAL,
        events,
        records,
        {**changes, "approval": approval, "due_at_ms": approval.remind_at_ms, "due_reason": "reminder"},
    )


def _guard_pause(
    ex: Execution,
    step: Step,
    result: Checkpointed,
    tripped: Tripped,
    now_ms: int,
    first_started: int,
    events: list[TimelineEvent],
) -> Transition:
    """A guard stopped `step` at a safe point (its checkpoint is where it goes on from): ask the
    approvers to resume or abort. The same quorum decides as approved the step; the pending
    approval has `kind: guard`, so the buttons, reminder, expiry and sweeper work as for any."""
    timeout_ms = _approval_timeout_ms(ex)
    before = ex.approval if ex.approval is not None and ex.approval.step_id == step.id else None
    risk = before.risk if before is not None else "high"
    done = f" ({result.summary})" if result.summary else ""
    approval = Approval(
        step.id,
        now_ms,
        now_ms + timeout_ms,
        f"{step.label} paused{done}: {tripped.why}. Resume goes on from where it stopped; "
        "abort fails the run (its on_failure steps run).",
        fingerprint="\n".join(tripped.alarms),
        required=before.required if before is not None else max(1, int(ex.quorum.get(risk, 1))),
        risk=risk,
        version=ex.version + 1,
        remind_at_ms=now_ms + timeout_ms // 2,
        kind="guard",
    )
    events.append(
        timeline_event(
            ex,
            len(events),
            now_ms,
            EventKind.APPROVAL_REQUESTED,
            f"paused: {tripped.why}; resume or abort?",
            step_id=step.id,
            figures={"expires_at_ms": approval.expires_at_ms, "guard_alarms": list(tripped.alarms)},
        )
    )
    return _transition(
        ex,
        now_ms,
        Status.AWAITING_APPROVAL,
        events,
        [],
        {
            "checkpoint": result.checkpoint,
            "step_started_at_ms": first_started,
            "approval": approval,
            "due_at_ms": approval.remind_at_ms,
            "due_reason": "reminder",
            "pause_request": None,  # obeyed
        },
    )


def guard_accepted(ex: Execution, step: Step) -> tuple[str, ...]:
    """The guard alarms the approvers resumed `step` over: in ALARM when it paused, so they do
    not pause it again (another alarm does)."""
    approval = ex.approval
    if approval is None or approval.kind != "guard" or approval.step_id != step.id:
        return ()
    if approval.decision != "approved" or not approval.fingerprint:
        return ()
    return tuple(approval.fingerprint.split("\n"))


def _first_start(ex: Execution, step: Step) -> bool:
    """The approved step has not begun: no attempt, checkpoint or restart yet."""
    return (
        ex.approval is not None
        and ex.approval.step_id == step.id
        and ex.approval.decision == "approved"
        and ex.attempt == 1
        and not ex.step_started_at_ms
        and ex.checkpoint is None
        and not ex.resumes
    )


def _recheck_approved(
    ex: Execution, runbook: Runbook, step: Step, now_ms: int, when: WhenFn, effect: EffectFn
) -> Transition | None:
    """After approval, before the step runs: the effect computed again. None if it is what was
    approved; a skip if there is nothing to change any more; else a new approval showing both."""
    assert ex.approval is not None and effect is not None
    now_effect: Effect = effect(ex, step)
    if not now_effect.changes:
        record = StepRecord(step.id, "skipped", 0, now_ms, now_ms)
        event = timeline_event(
            ex,
            0,
            now_ms,
            EventKind.STEP_SKIPPED,
            f"skipped: nothing to change any more ({now_effect.reason or now_effect.text})",
            step_id=step.id,
        )
        return _enter(ex, runbook, next_id(runbook, step, ex.phase), now_ms, [event], [record], when, effect)
    if now_effect.fingerprint == ex.approval.fingerprint:
        return None
    approved = tuple(s for s in ex.approved_steps if s != step.id)
    return _ask_approval(
        ex,
        step,
        now_effect,
        now_ms,
        [],
        [],
        {"approved_steps": approved},
        changed_from=ex.approval.effect,
    )


def _finish(
    ex: Execution,
    runbook: Runbook,
    now_ms: int,
    events: list[TimelineEvent],
    records: list[StepRecord] | None = None,
) -> Transition:
    if ex.phase == "on_failure":
        return _end(ex, runbook, now_ms, Status(ex.end_status or Status.FAILED.value), events, records)
    return _end(ex, runbook, now_ms, Status.SUCCEEDED, events, records)


def _fail_run(
    ex: Execution,
    runbook: Runbook,
    now_ms: int,
    events: list[TimelineEvent],
    records: list[StepRecord],
    end_status: Status,
    error: dict[str, str],
    when: WhenFn,
    effect: EffectFn,
) -> Transition:
    """The main path failed: run the runbook's on_failure steps, then end with `end_status`."""
    if ex.phase == "main" and runbook.on_failure:
        failing = dataclasses.replace(ex, phase="on_failure", end_status=end_status.value, error=error)
        t = _enter(failing, runbook, runbook.on_failure[0].id, now_ms, events, records, when, effect)
        # The path's first transition records why it runs; what _enter set wins where both do.
        changes: Changes = {"phase": "on_failure", "end_status": end_status.value, "error": error, **t.set}
        return dataclasses.replace(t, set=changes)
    # Already on the on_failure path (a rollback step failed), or no path to take: end here.
    keep = ex.error or error
    ended = dataclasses.replace(ex, error=keep)
    t = _end(
        ended, runbook, now_ms, end_status if ex.phase == "main" else Status(ex.end_status), events, records
    )
    return _amend(t, error=keep)


_END_EVENT = {
    Status.SUCCEEDED: EventKind.RUN_SUCCEEDED,
    Status.FAILED: EventKind.RUN_FAILED,
    Status.CANCELLED: EventKind.RUN_CANCELLED,
    Status.TIMED_OUT: EventKind.RUN_TIMED_OUT,
}


def _end(
    ex: Execution,
    runbook: Runbook,
    now_ms: int,
    status: Status,
    events: list[TimelineEvent],
    records: list[StepRecord] | None = None,
) -> Transition:
    records = records or []
    # Counted as the parent's progress bar counts: every step the run went through, of its main path.
    went_through = sum(
        1
        for r in {**ex.steps, **{r.step_id: r for r in records}}.values()
        if r.outcome in {"succeeded", "failed", "skipped"}
    )
    done = min(went_through, max(ex.total_steps, 1)) if ex.total_steps else went_through
    elapsed = now_ms - ex.created_at_ms
    if status is Status.CANCELLED:
        summary = f"run cancelled at step {done} of {ex.total_steps or done}"
        actor = ex.cancel_requested_by
    elif status is Status.SUCCEEDED:
        summary, actor = f"{runbook.title}: succeeded, step {done} of {ex.total_steps or done}", ""
    else:
        reason = ex.error.get("message", "") if ex.error else ""
        summary, actor = (
            f"run {status.value.lower().replace('_', ' ')}" + (f": {reason}" if reason else ""),
            "",
        )
    if ex.drill:
        from bot.engine.verdict import judge

        view = dataclasses.replace(ex, status=status, steps={**ex.steps, **{r.step_id: r for r in records}})
        summary = f"{summary} · {judge(view, runbook).summary()}"
    events = [
        *events,
        timeline_event(
            ex,
            len(events),
            now_ms,
            _END_EVENT[status],
            summary,
            actor=actor,
            duration_ms=elapsed,
            error_code=ex.error.get("code", "") if ex.error else "",
        ),
    ]
    return _transition(
        ex,
        now_ms,
        status,
        events,
        records,
        {"cursor": None, "checkpoint": None, **no_due(), "expires_at": now_ms // 1000 + RETENTION_SECONDS},
        expect=frozenset(ACTIVE),
    )


def _transition(
    ex: Execution,
    now_ms: int,
    status: Status,
    events: list[TimelineEvent],
    records: list[StepRecord],
    changes: Changes | None = None,
    expect: frozenset[Status] | None = None,
) -> Transition:
    events = list(events)
    changes = Changes(**(changes or {}))  # a copy: the caller's dict is never changed
    if not ex.sla_warned and ex.sla_resolution_minutes and status not in TERMINAL:
        window_ms = ex.sla_resolution_minutes * 60_000
        used = (now_ms - ex.created_at_ms) / window_ms
        if used >= ex.sla_warn_at:
            left_min = max(0, (window_ms - (now_ms - ex.created_at_ms)) // 60_000)
            events.append(
                timeline_event(
                    ex,
                    len(events),
                    now_ms,
                    EventKind.SLA_WARNING,
                    f"{used:.0%} of the {ex.sla_resolution_minutes}-minute resolution SLA used; "
                    f"{left_min} min left",
                    figures={"sla_used": round(used, 3)},
                )
            )
            changes["sla_warned"] = True
    due = changes.get("due_at_ms", ex.due_at_ms)
    drill_ends = ex.drill_until_ms if ex.drill and status not in TERMINAL and ex.phase == "main" else None
    if drill_ends and (due is None or due > drill_ends):
        # The sweeper must look at a drill when its time is up, whatever else it waits for.
        changes["due_at_ms"] = drill_ends
    return Transition(ex.version, now_ms, status, changes, tuple(records), tuple(events), expect)


# -- the building blocks of a transition, public for the planner (bot/engine/planner.py), whose
# plan executions walk a runbook the way runs do and must record it the same way ----------------


def timeline_event(
    ex: Execution,
    offset: int,
    now_ms: int,
    kind: EventKind,
    summary: str,
    *,
    step_id: str = "",
    actor: str = "",
    duration_ms: int | None = None,
    error_code: str = "",
    figures: dict[str, Any] | None = None,
) -> TimelineEvent:
    """The `offset`-th event (from 0) a transition of `ex` appends: numbered after its last one
    (`seq` = last_seq + offset + 1), so the events of one transition keep their order."""
    return TimelineEvent(
        ex.last_seq + offset + 1,
        now_ms,
        kind,
        summary,
        step_id,
        actor,
        duration_ms,
        error_code,
        figures or {},
    )


def view_with_records(ex: Execution, records: list[StepRecord], cursor: str | None) -> Execution:
    """`ex` with this transition's step records (and its cursor at `cursor`), for `when`
    conditions and effects that read the outputs of steps recorded in the same transition;
    `ex` itself when there are none."""
    if not records:
        return ex
    return dataclasses.replace(ex, steps={**ex.steps, **{r.step_id: r for r in records}}, cursor=cursor)


def next_id(runbook: Runbook, step: Step, phase: str) -> str | None:
    """The id of the step after `step` on the run's `phase` path (main or on_failure): its
    `next:` if it names one, else the following step of the path `step` is on (a step jumped to
    from the other path continues there); None after an `end` step or the path's last step."""
    if step.is_end:
        return None
    if step.next:
        return step.next
    path = runbook.on_failure if phase == "on_failure" else runbook.steps
    ids = [s.id for s in path]
    if step.id not in ids:  # jumped to from the other path
        path = runbook.steps if phase == "on_failure" else runbook.on_failure
        ids = [s.id for s in path]
    i = ids.index(step.id)
    return ids[i + 1] if i + 1 < len(ids) else None


def stuck(step: Step | None, now_ms: int) -> Changes:
    """The due time of a step that starts now: its timeout plus a grace (as long as the step, at
    least MIN_GRACE_MS, at most GRACE_MS). If nothing has moved the run by then, the sweeper
    treats its worker as stopped (`due_reason: stuck`)."""
    step_ms = step.timeout_seconds * 1000 if step else 0
    timeout_ms = step_ms + min(GRACE_MS, max(MIN_GRACE_MS, step_ms))
    return {"due_at_ms": now_ms + timeout_ms, "due_reason": "stuck"}


def no_due() -> Changes:
    """No due time: the sweeper has nothing to do for the run (it ended, or is at no step)."""
    return {"due_at_ms": None, "due_reason": ""}


def _wake(at_ms: int) -> Changes:
    return {"due_at_ms": at_ms, "due_reason": "wake"}


def _approval_timeout_ms(ex: Execution) -> int:
    return max(1, ex.approval_timeout_minutes) * 60_000


def _started_summary(ex: Execution, runbook: Runbook) -> str:
    """Plain text: who started it is the event's actor (rendered as a mention from that field)."""
    label = "drill" if ex.drill else "run"
    summary = f"{runbook.title}: {label} started for {ex.partner}"
    if ex.plan_of:  # the run's first event links the plan it was started from
        summary += f"; started from plan {ex.plan_of}"
    if ex.forced_over:
        summary += f"; forced past the table lock held by {ex.forced_over} (force=true by an approver)"
    return summary
