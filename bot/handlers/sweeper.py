"""The scheduled sweeper: wakes waits and retry backoffs, expires approvals, restarts stuck runs.

It finds what is due through the sparse `due-index` GSI (never a scan), and moves each run with
the same conditional write as every other transition.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from bot.config import sweep_every_seconds
from bot.engine import machine, planner
from bot.exceptions import ClaimHeld, TransitionConflict
from bot.handlers.services import Sandbox, Services, on_lambda

logger = Logger()
SANDBOX = Sandbox(Services.for_function)
# A run whose step nobody has claimed is waiting for its stream record, not stuck, for this long:
# the stream retries a failed batch for minutes before it gives the record up.
QUEUED_PATIENCE_MS = 5 * 60_000
WAITING_FOR_SLACK = frozenset({"publish", "home"})  # nudged at their time, not moved
TURN_LOOK_MS = 1_000  # while timelines wait for their turns, the due-index is read this often
# The turns are left to the next sweep this long before it (at most a tenth of the period).
TURN_MARGIN_MS = 5_000


@dataclass
class SweepReport:
    examined: int = 0
    moved: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    waiting: int = 0  # due, but a worker holds the step, or its record is still queued


def sweep(
    store: Any, catalog: Any, executor: Any, now_ms: int, limit: int = 200, owner: str = ""
) -> SweepReport:
    """Move every run that is due, each under the same claim rule as the worker: a run whose
    current version a live worker holds is never moved, whatever the due reason (a wake, an
    expiry, a stuck step, a drill's time limit); that worker moves it at its next step boundary."""
    report = SweepReport()
    owner = owner or f"sweeper-{uuid.uuid4().hex[:12]}"
    for due in list(store.due(now_ms, limit)):
        report.examined += 1
        execution_id = due.execution_id
        if due.kind in WAITING_FOR_SLACK:
            if _nudge(store, due, now_ms):
                report.moved["nudge"] = report.moved.get("nudge", 0) + 1
            continue
        ex = store.get(execution_id)
        runbook = catalog.runbooks.get(ex.runbook) if ex else None
        if ex is None or runbook is None:
            continue
        if _still_working(store, ex, now_ms):
            report.waiting += 1
            continue
        # No effects here: a risky step the sweeper enters is asked for by the worker, which
        # computes its effect (the sweeper never calls a partner's AWS).
        if ex.kind == planner.PLAN:
            t = planner.on_due(ex, runbook, now_ms, executor.when)
        else:
            t = machine.on_due(ex, runbook, now_ms, executor.when, None)
        if t is None:
            continue
        try:
            store.move(execution_id, t, owner, now_ms)
        except ClaimHeld:
            report.waiting += 1
            continue
        except TransitionConflict:
            report.conflicts += 1
            continue
        reason = ex.due_reason or "due"
        report.moved[reason] = report.moved.get(reason, 0) + 1
        _record_metrics(ex, t, now_ms)
    return report


def _record_metrics(ex: Any, t: Any, now_ms: int) -> None:
    """What the sweeper ends or expires, in the bot's metrics (the worker records the rest)."""
    from bot import metrics

    if (
        ex.approval is not None
        and t.set.get("approval") is not None
        and t.set["approval"].decision == "expired"
    ):
        waited_s = (now_ms - ex.approval.requested_at_ms) / 1000
        metrics.approval_wait(ex.runbook, "expired", waited_s, ex.execution_id)
    if t.status.terminal:
        metrics.run_ended(ex.runbook, t.status.value, ex.execution_id)


def _still_working(store: Any, ex: Any, now_ms: int) -> bool:
    """A "stuck" run that is only slow: its record is still on the way to a worker.

    (A run whose worker holds a live claim is left alone by the claim itself, in `store.move`.)
    """
    if ex.due_reason != "stuck" or ex.due_at_ms is None or ex.due_at_ms > now_ms:
        return False
    if ex.drill and ex.drill_until_ms and now_ms >= ex.drill_until_ms:
        return False  # the drill's time is up: end it, unless a worker holds the step (the claim decides)
    if store.claim_lease(ex.execution_id, ex.version) is not None:
        return False  # claimed once: the claim's lease says whether its worker is still there
    return bool(now_ms - ex.updated_at_ms < QUEUED_PATIENCE_MS)


def nudge_turns(
    store: Any,
    until_ms: int,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    limit: int = 1_000,
) -> int:
    """Nudge each waiting timeline when its turn in its channel comes (and each home whose
    Retry-After has passed), until `until_ms` (the next scheduled sweep): a busy channel's queue
    moves at Slack's pace, about a post a second, not at the schedule's minute. The sweeper waits
    for the turns here, never a stream lane; with no timeline waiting it returns at once. Returns
    how many it nudged."""
    nudged = 0
    while True:
        now_ms = int(clock() * 1000)
        if now_ms >= until_ms:
            return nudged
        waiting = [d for d in store.due(until_ms, limit) if d.kind in WAITING_FOR_SLACK]
        if not waiting:
            return nudged
        for due in waiting:
            if due.due_at_ms <= now_ms and _nudge(store, due, now_ms):
                nudged += 1
        later = [d.due_at_ms for d in waiting if d.due_at_ms > now_ms]
        # Turns taken meanwhile appear at the next look: look at least once a second.
        next_ms = min([*later, now_ms + TURN_LOOK_MS, until_ms])
        sleep(max(0.0, next_ms - int(clock() * 1000)) / 1000)


def _nudge(store: Any, due: Any, now_ms: int) -> bool:
    """A waiting timeline's run gets a stream record; a waiting home is asked for again."""
    if due.kind == "home":
        from bot.store.homes import HomeStore

        return HomeStore(store.client, store.table).wake(due.user_id, due.due_at_ms, now_ms)
    return bool(store.nudge(due.execution_id, due.due_at_ms, now_ms))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    services = SANDBOX()
    report = sweep(services.store, services.catalog, services.executor, int(clock() * 1000))
    # Until shortly before the next scheduled sweep, within this invocation's time.
    period_ms = sweep_every_seconds() * 1000
    margin_ms = min(TURN_MARGIN_MS, period_ms / 10)
    left_ms = min(period_ms, context.get_remaining_time_in_millis()) - margin_ms
    nudged = nudge_turns(services.store, int(clock() * 1000 + left_ms), clock)
    summary = {
        "examined": report.examined,
        "moved": report.moved,
        "conflicts": report.conflicts,
        "waiting": report.waiting,
        "turns_nudged": nudged,
    }
    logger.info("swept", extra=summary)
    return summary


if on_lambda():  # init, not the first schedule
    SANDBOX.warm()
