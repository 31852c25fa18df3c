"""A plan's state machine: `/runbook plan`, a dry run with the exact effects. Pure, like `machine`.

A plan is an execution of kind `plan` on the same table, so it has the same stream, timeline and
`status` as a run. It walks the runbook's main path one step per transition: the worker previews
each step (`bot.actions.preview`: reads run for real, changes are computed, never applied) and
`after_preview` records the outcome with its mark, so later steps and `when` conditions see the
predicted outputs. A plan takes no lock and asks for no approval; where the run would stop (a
failing check, an error), the plan says "the run would stop here" and ends, and the steps after it
are not reached. The plan itself always ends SUCCEEDED unless it is cancelled or cannot read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.actions.base import Effect
from bot.engine import machine
from bot.engine.machine import Changes, Execute, Idle, Move, Transition
from bot.engine.model import Risk, Runbook, Step
from bot.store.model import ACTIVE, EventKind, Execution, Status, StepRecord, TimelineEvent

PLAN = "plan"  # Execution.kind of a plan
MARK = "plan"  # the event figures key holding a step's mark
# Marks beyond the previews' (run, approval, skip, end): where the run would fail.
STOP, FAILS_ON, UNSEEN = "stop", "fails", "unseen"
NOT_REACHED = "not_reached"


def next_move(ex: Execution, runbook: Runbook, now_ms: int, when: machine.WhenFn) -> machine.Plan:
    """What the worker must do for this state of a plan, if anything."""
    idle = machine.idle_reason(ex, now_ms)
    if idle:
        return Idle(idle)
    if ex.cancel_requested_by:
        return Move(_end(ex, runbook, now_ms, [], [], Status.CANCELLED))
    if ex.status is Status.PENDING:
        started = machine.timeline_event(
            ex,
            0,
            now_ms,
            EventKind.RUN_STARTED,
            f"{runbook.title}: plan started for {ex.partner} (a dry run: reads for real, changes nothing)",
            actor=ex.requested_by,
        )
        first = runbook.steps[0].id if runbook.steps else None
        return Move(_enter(ex, runbook, first, now_ms, [started], [], when))
    if ex.cursor is None:
        return Move(_end(ex, runbook, now_ms, [], [], Status.SUCCEEDED))
    return Execute(runbook.step(ex.cursor))


def after_preview(
    ex: Execution,
    runbook: Runbook,
    step: Step,
    result: machine.StepResult,
    now_ms: int,
    when: machine.WhenFn,
) -> Transition:
    """Commit what the worker found when it previewed `step` (the step at `ex.cursor`)."""
    first_started = ex.step_started_at_ms or result.started_ms
    if isinstance(result, machine.Checkpointed):
        if now_ms - first_started <= step.timeout_seconds * 1000:
            return machine.after_step(ex, runbook, step, result, now_ms, when, None)  # reads on
        result = machine.Failed(
            result.started_ms,
            "StepTimedOut",
            f"step {step.id} ran longer than its timeout of {step.timeout_seconds}s",
            False,
        )
    if isinstance(result, machine.Failed):
        if result.retryable and ex.attempt < step.retry.max_attempts:
            return machine.after_step(ex, runbook, step, result, now_ms, when, None)  # as the run would
        return _failed(ex, runbook, step, result, first_started, now_ms, when)

    mark = str(result.figures.get(MARK) or "run")
    figures = dict(result.figures)
    if step.risk.asks_approval and mark == "run":  # the run asks for approval of every risky step
        mark = figures[MARK] = "approval"
        figures.setdefault("effect", result.summary)
    if mark == "approval" and step.risk is Risk.CRITICAL:
        figures["risk"] = "critical"  # the run will ask for the critical quorum, whatever the effect
    record = StepRecord(step.id, "succeeded", ex.attempt, first_started, now_ms, result.outputs)
    kind = EventKind.STEP_SKIPPED if mark == "skip" else EventKind.STEP_FINISHED
    summary = _marked(mark, result.summary)
    if mark == "approval":
        summary += _quorum(ex, str(figures.get("risk") or "high"))
    if step.when:
        summary += f" (its condition holds: {_condition(step)})"
    event = machine.timeline_event(
        ex,
        0,
        now_ms,
        kind,
        summary,
        step_id=step.id,
        duration_ms=now_ms - first_started,
        figures=figures,
    )
    if mark == "skip":
        record = dataclasses.replace(record, outcome="skipped")
    following = None if result.end_run else machine.next_id(runbook, step, ex.phase)
    return _enter(ex, runbook, following, now_ms, [event], [record], when)


def on_due(ex: Execution, runbook: Runbook, now_ms: int, when: machine.WhenFn) -> Transition | None:
    """The sweeper's move for a plan whose `due_at_ms` has passed (a wake, or a stopped worker)."""
    if ex.status.terminal or ex.due_at_ms is None or ex.due_at_ms > now_ms:
        return None
    if ex.cursor is not None and ex.due_reason == "stuck" and ex.resumes >= machine.MAX_RESUMES:
        step = runbook.step(ex.cursor)
        stopped = machine.Failed(
            now_ms,
            "StepTimedOut",
            f"step {step.id} made no progress after {machine.MAX_RESUMES} restarts",
            False,
        )
        return after_preview(ex, runbook, step, stopped, now_ms, when)
    return machine.on_due(ex, runbook, now_ms, when, None)


def beside_plan(current: Effect, plan: Execution | None, step_id: str) -> Effect:
    """A run started from a plan: its approval shows the planned effect beside the current one
    when they differ (the partner's state changed since the plan). The fingerprint stays the
    current one, so the recheck after approval compares like with like."""
    if plan is None:
        return current
    planned = next(
        (e for e in reversed(plan.timeline) if e.step_id == step_id and e.figures.get("effect")),
        None,
    )
    if planned is None:
        return dataclasses.replace(
            current, text=f"{current.text} (plan {plan.execution_id} did not reach this step)"
        )
    if str(planned.figures.get("fingerprint") or "") == current.fingerprint:
        return dataclasses.replace(current, text=f"{current.text} (as planned in {plan.execution_id})")
    return dataclasses.replace(
        current,
        text=f"{current.text} — changed since plan {plan.execution_id}, which showed: {planned.figures['effect']}",
    )


def marks(ex: Execution, runbook: Runbook) -> list[tuple[Step, str, str]]:
    """(step, mark, what) for each step of the main path, in order, as the plan found it.

    Steps the plan has not come to yet are `pending`; once it ended, `not_reached`."""
    latest: dict[str, TimelineEvent] = {}
    for event in ex.timeline:
        if event.step_id and event.kind in {
            EventKind.STEP_FINISHED,
            EventKind.STEP_SKIPPED,
            EventKind.STEP_FAILED,
        }:
            latest[event.step_id] = event
    rows: list[tuple[Step, str, str]] = []
    for step in runbook.steps:
        found = latest.get(step.id)
        if found is None:
            rows.append((step, NOT_REACHED if ex.status.terminal else "pending", ""))
        else:
            rows.append((step, str(found.figures.get(MARK) or "run"), found.summary))
    return rows


def tally(ex: Execution, runbook: Runbook) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, mark, _ in marks(ex, runbook):
        counts[mark] = counts.get(mark, 0) + 1
    return counts


# -- internals ------------------------------------------------------------------------------


_PREFIX = {"approval": "needs approval: ", "skip": "would skip, because "}


def _quorum(ex: Execution, risk: str) -> str:
    """How many approvers the run will need here, when it is more than one or the change is critical."""
    needed = max(1, int(ex.quorum.get(risk, 1)))
    if needed == 1 and risk != "critical":
        return ""
    return f" ({risk}: {needed} approver{'s' if needed > 1 else ''} needed)"


def _condition(step: Step) -> str:
    """A step's `when` as people read it: the expression, without its template braces."""
    text = (step.when or "").strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2].strip()
    return text


def _marked(mark: str, summary: str) -> str:
    return _PREFIX.get(mark, "") + summary


def _failed(
    ex: Execution,
    runbook: Runbook,
    step: Step,
    result: machine.Failed,
    first_started: int,
    now_ms: int,
    when: machine.WhenFn,
) -> Transition:
    record = StepRecord(
        step.id,
        "failed",
        ex.attempt,
        first_started,
        now_ms,
        error_code=result.code,
        error_message=result.message,
    )
    go_on = step.on_failure == "continue" or not step.is_critical
    jump = step.on_failure[5:] if step.on_failure.startswith("step:") else ""
    if go_on or jump:
        after = f"the run would go on to {jump}" if jump else "the run would go on"
        event = machine.timeline_event(
            ex,
            0,
            now_ms,
            EventKind.STEP_FAILED,
            f"would fail: {result.message}; {after}",
            step_id=step.id,
            error_code=result.code,
            figures={MARK: FAILS_ON},
        )
        following = jump or machine.next_id(runbook, step, ex.phase)
        return _enter(ex, runbook, following, now_ms, [event], [record], when)
    if result.code == "PlanRefusesWrite":  # not where the run would stop: where the plan cannot see
        event = machine.timeline_event(
            ex,
            0,
            now_ms,
            EventKind.STEP_FAILED,
            f"the plan cannot preview this step without changing something, so it stops here: {result.message}",
            step_id=step.id,
            error_code=result.code,
            figures={MARK: UNSEEN},
        )
        return _end(ex, runbook, now_ms, [event], [record], Status.SUCCEEDED)
    rollback = ""
    if runbook.on_failure:
        rollback = (
            "; then its on_failure steps would run (" + ", ".join(s.id for s in runbook.on_failure) + ")"
        )
    event = machine.timeline_event(
        ex,
        0,
        now_ms,
        EventKind.STEP_FAILED,
        f"the run would stop here: {result.message}{rollback}",
        step_id=step.id,
        error_code=result.code,
        figures={MARK: STOP},
    )
    return _end(ex, runbook, now_ms, [event], [record], Status.SUCCEEDED)


def _enter(
    ex: Execution,
    runbook: Runbook,
    step_id: str | None,
    now_ms: int,
    events: list[TimelineEvent],
    records: list[StepRecord],
    when: machine.WhenFn,
) -> Transition:
    """Move the cursor to `step_id`, marking the steps the run would skip on the way."""
    for _ in range(machine.SKIP_LIMIT):
        if step_id is None:
            return _end(ex, runbook, now_ms, events, records, Status.SUCCEEDED)
        step = runbook.step(step_id)
        view = machine.view_with_records(ex, records, step_id)
        try:
            holds = when(view, step)
        except Exception as error:  # the run would fail on it too (its worker raises there)
            return _stop_on_condition(ex, runbook, step, error, now_ms, events, records)
        if holds:
            break
        records.append(StepRecord(step.id, "skipped", 0, now_ms, now_ms))
        events.append(
            machine.timeline_event(
                ex,
                len(events),
                now_ms,
                EventKind.STEP_SKIPPED,
                f"would skip, because its condition is false: {_condition(step)}",
                step_id=step.id,
                figures={MARK: "skip"},
            )
        )
        step_id = machine.next_id(runbook, step, ex.phase)
    else:
        raise ValueError(f"runbook {runbook.name} skips steps in a cycle")
    fresh: Changes = {
        "cursor": step.id,
        "attempt": 1,
        "checkpoint": None,
        "step_started_at_ms": 0,
        "resumes": 0,
    }
    return _transition(ex, now_ms, Status.RUNNING, events, records, {**fresh, **machine.stuck(step, now_ms)})


def _stop_on_condition(
    ex: Execution,
    runbook: Runbook,
    step: Step,
    error: Exception,
    now_ms: int,
    events: list[TimelineEvent],
    records: list[StepRecord],
) -> Transition:
    records.append(
        StepRecord(step.id, "failed", 1, now_ms, now_ms, error_code="InvalidInput", error_message=str(error))
    )
    events.append(
        machine.timeline_event(
            ex,
            len(events),
            now_ms,
            EventKind.STEP_FAILED,
            f"the run would stop here: its condition cannot be evaluated: {error}",
            step_id=step.id,
            error_code="InvalidInput",
            figures={MARK: STOP},
        )
    )
    return _end(ex, runbook, now_ms, events, records, Status.SUCCEEDED)


def _end(
    ex: Execution,
    runbook: Runbook,
    now_ms: int,
    events: list[TimelineEvent],
    records: list[StepRecord],
    status: Status,
) -> Transition:
    view = dataclasses.replace(
        ex,
        status=status,
        steps={**ex.steps, **{r.step_id: r for r in records}},
        timeline=ex.timeline + tuple(events),
    )
    counts = tally(view, runbook)
    if status is Status.CANCELLED:
        summary, kind, actor = "plan cancelled", EventKind.RUN_CANCELLED, ex.cancel_requested_by
    else:
        parts = [
            f"{counts.get('run', 0) + counts.get('end', 0)} would run",
            f"{counts.get('approval', 0)} need approval",
            f"{counts.get('skip', 0)} would skip",
        ]
        if counts.get(STOP):
            parts.append("the run would stop at a step")
        if counts.get(NOT_REACHED):
            parts.append(f"{counts[NOT_REACHED]} not reached")
        summary = f"{runbook.title}: plan ready: " + ", ".join(parts)
        kind, actor = EventKind.RUN_SUCCEEDED, ""
    figures: dict[str, Any] = {k: v for k, v in sorted(counts.items())}
    events = [
        *events,
        machine.timeline_event(
            ex,
            len(events),
            now_ms,
            kind,
            summary,
            actor=actor,
            duration_ms=now_ms - ex.created_at_ms,
            figures=figures,
        ),
    ]
    return Transition(
        ex.version,
        now_ms,
        status,
        {
            "cursor": None,
            "checkpoint": None,
            **machine.no_due(),
            "expires_at": now_ms // 1000 + machine.RETENTION_SECONDS,
        },
        tuple(records),
        tuple(events),
        frozenset(ACTIVE),
    )


def _transition(
    ex: Execution,
    now_ms: int,
    status: Status,
    events: list[TimelineEvent],
    records: list[StepRecord],
    changes: Changes,
) -> Transition:
    return Transition(ex.version, now_ms, status, changes, tuple(records), tuple(events))
