"""Resuming an ended run (`/runbook retry`): which statuses may be resumed, from where, what the
run's on_failure steps already undid, and the locks it takes again. Pure functions.

The transition itself is `bot.engine.machine.resume`; the store writes it with
`ExecutionStore.reopen` (claim, then one transaction with the locks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.engine.model import Runbook, Step
from bot.store import keys
from bot.store.model import EventKind, Execution, Status, TimelineEvent

if TYPE_CHECKING:
    from bot.partners.model import Partner

RESUMABLE = frozenset({Status.FAILED, Status.TIMED_OUT})


def resume_point(ex: Execution, runbook: Runbook) -> Step | None:
    """The step the run failed at (recorded in its error), where a retry resumes it; None when it
    ended outside a step or the step is no longer in the runbook."""
    step_id = (ex.error or {}).get("step", "")
    if not step_id:
        return None
    try:
        return runbook.step(step_id)
    except KeyError:
        return None


def kept_steps(ex: Execution, runbook: Runbook, step: Step) -> int:
    """How many of its main path's steps before `step` the run completed: kept, not run again."""
    main = {s.id for s in runbook.steps} - {step.id}
    return sum(1 for r in ex.steps.values() if r.outcome == "succeeded" and r.step_id in main)


def rolled_back(ex: Execution, runbook: Runbook) -> list[TimelineEvent]:
    """What the run's on_failure steps changed since it last (re)started: the on_failure steps that
    change something (a changing action, or a risky step) and ran, finished or failed part way, as
    their timeline events."""
    from bot.engine.starts import CHANGING_ACTIONS

    changing = {s.id for s in runbook.on_failure if s.action in CHANGING_ACTIONS or s.risk.asks_approval}
    since = max((e.seq for e in ex.timeline if e.kind is EventKind.RUN_RESUMED), default=0)
    return [
        e
        for e in ex.timeline
        if e.seq > since
        and e.kind in {EventKind.STEP_FINISHED, EventKind.STEP_FAILED}
        and e.step_id in changing
    ]


def locks_of(ex: Execution, runbook: Runbook, partner: Partner) -> list[dict[str, str]]:
    """The locks the run took when it started, to take again: its tables' (a drill's are its drill
    tables), and an alarm start's partner+runbook lock."""
    from bot.engine.starts import run_locks

    locks = run_locks(runbook, partner, ex.params, drill=ex.drill)
    if ex.trigger == "alarm":
        locks.insert(0, keys.active_run_key(ex.partner, ex.runbook))
    return locks


def just_resumed(ex: Execution) -> bool:
    """This state is the one `/runbook retry` wrote: its last transition (at `updated_at_ms`) added
    the RUN_RESUMED event (and at most an SLA warning after it). The worker counts the run as
    started again from it (RunsStarted, trigger `retry`), once, as its own writes are counted."""
    return any(e.kind is EventKind.RUN_RESUMED and e.at_ms == ex.updated_at_ms for e in ex.timeline[-2:])
