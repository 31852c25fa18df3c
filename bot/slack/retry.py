"""`/runbook retry <execution-id> [confirm=true]`: resume a FAILED or TIMED_OUT run from its failed step.

The caller (`CommandService`) has checked that the person may see the run here and may act on it
(its requester or the partner's approvers). This decides the rest: the run's state, a rollback
that needs confirming, its locks, and the one conditional write that reopens it; every refusal is
a CommandError that says what is valid instead. Nothing calls a partner's AWS here: a risky
failed step is asked for again by the worker, which computes its effect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.engine import machine
from bot.engine.resumes import RESUMABLE, kept_steps, locks_of, resume_point, rolled_back
from bot.exceptions import ClaimHeld, CommandError, LockHeld, RunExpired, TransitionConflict
from bot.slack import render
from bot.store.model import EventKind, Execution, Status, TimelineEvent
from bot.text import escape

if TYPE_CHECKING:
    from bot.engine.model import Runbook
    from bot.partners.model import Partner
    from bot.store.executions import ExecutionStore


def resume_run(
    store: ExecutionStore,
    ex: Execution,
    runbook: Runbook,
    partner: Partner,
    by: str,
    *,
    confirm: bool,
    now_ms: int,
) -> render.Message:
    """Reopen `ex` for `by`, or raise CommandError saying why not."""
    why_not = refusal(ex, runbook, now_ms)
    if why_not:
        raise CommandError(why_not)
    undone = rolled_back(ex, runbook)
    if undone and not confirm:
        return _confirm_first(ex, runbook, undone)
    step = resume_point(ex, runbook)
    assert step is not None  # refusal() says so otherwise
    t = machine.resume(ex, runbook, by, now_ms)
    try:
        store.reopen(ex, t, locks_of(ex, runbook, partner), f"retry-{by}", now_ms, fresh_step=step.id)
    except ClaimHeld:
        raise CommandError(
            f"`{ex.execution_id}` is being resumed by someone else right now; nothing changed. "
            f"Follow it with `/runbook status {ex.execution_id}`"
        ) from None
    except TransitionConflict:
        current = store.get(ex.execution_id)
        raise CommandError(
            (refusal(current, runbook, now_ms) if current else "")
            or f"`{ex.execution_id}` changed while you resumed it; nothing changed. Look at "
            f"`/runbook status {ex.execution_id}` and try again"
        ) from None
    except LockHeld as held:
        raise CommandError(
            f"`{held.holder}` is running on a table `{ex.execution_id}` would change (two runs never "
            f"change one table at once); nothing changed. Wait for it to end (`/runbook status "
            f"{held.holder}`) or cancel it (`/runbook cancel {held.holder}`), then retry"
        ) from None
    except RunExpired:
        raise CommandError(expired_text(ex.execution_id)) from None
    title = escape(step.label)
    kept = kept_steps(ex, runbook, step)
    risky = " It needs an approver again before it runs." if step.risk.asks_approval else ""
    return render.refusal(
        f"Resuming `{ex.execution_id}` from *{title}* with a fresh attempt; {kept} completed "
        f"step{'s' if kept != 1 else ''} and their outputs are kept.{risky} It continues in its thread; "
        f"`/runbook status {ex.execution_id}` any time."
    )


def refusal(ex: Execution, runbook: Runbook, now_ms: int) -> str:
    """Why `ex` cannot be resumed now, and what is valid instead; "" when it can."""
    ref = f"`{ex.execution_id}`"
    again = f"start a new run with `/runbook {ex.runbook} {ex.partner}`"
    if ex.kind == "plan":  # a plan changes nothing, so there is nothing to resume
        return (
            f"{ref} is a plan (a dry run); there is nothing to resume. Plan again with "
            f"`/runbook plan {ex.runbook} {ex.partner}`, or {again}"
        )
    if ex.status is Status.SUCCEEDED:
        return f"{ref} already SUCCEEDED; there is nothing to resume. To do it again, {again}"
    if ex.status is Status.CANCELLED:
        by = f" by {render.mention(ex.cancel_requested_by)}" if ex.cancel_requested_by else ""
        return (
            f"{ref} was CANCELLED{by}, and a cancelled run stays cancelled: retry resumes FAILED or "
            f"TIMED_OUT runs. To run it again, {again}"
        )
    if ex.status not in RESUMABLE:
        resumed = [e for e in ex.timeline if e.kind is EventKind.RUN_RESUMED]
        how = f" (resumed by {render.mention(resumed[-1].actor)})" if resumed and resumed[-1].actor else ""
        return (
            f"{ref} is {ex.status.value}{how}, not ended: retry resumes FAILED or TIMED_OUT runs. "
            f"Follow it with `/runbook status {ex.execution_id}`, or stop it with "
            f"`/runbook cancel {ex.execution_id}`"
        )
    if ex.expires_at is not None and ex.expires_at <= now_ms // 1000:
        return expired_text(ex.execution_id)
    if ex.drill and ex.drill_until_ms is not None and now_ms >= ex.drill_until_ms:
        return (
            f"{ref} is a drill past its time limit, so it cannot be resumed; start a new drill with "
            f"`/runbook drill {ex.runbook} {ex.partner}`"
        )
    if ex.runbook_version != runbook.version:
        return (
            f"runbook `{ex.runbook}` changed since {ref} started (version `{escape(ex.runbook_version[:7])}`, "
            f"now `{escape(runbook.version[:7])}`); resuming would mix two versions of it. Instead, {again}"
        )
    if resume_point(ex, runbook) is None:
        where = (ex.error or {}).get("step", "")
        why = (
            f"its failed step `{escape(where)}` is no longer in the runbook"
            if where
            else "it ended outside any step"
        )
        return f"{ref} cannot be resumed: {why}. Instead, {again}"
    return ""


def expired_text(execution_id: str) -> str:
    days = machine.RETENTION_SECONDS // 86_400
    return (
        f"`{execution_id}` ended more than {days} days ago and its records have expired, so it cannot be "
        "resumed; start a new run of its runbook"
    )


def unknown_text(execution_id: str) -> str:
    days = machine.RETENTION_SECONDS // 86_400
    return (
        f"no execution `{execution_id}`: none was started with this id, or it ended more than {days} days "
        "ago and was removed. Execution ids are named in the answer that started the run and in its "
        "channel message"
    )


def _confirm_first(ex: Execution, runbook: Runbook, undone: list[TimelineEvent]) -> render.Message:
    """The run's on_failure steps changed something back: say what, and how to resume anyway."""
    step = resume_point(ex, runbook)
    assert step is not None
    lines = []
    for event in undone:
        try:
            title = runbook.step(event.step_id).label
        except KeyError:
            title = event.step_id
        lines.append(f"• *{escape(title)}*: {escape(event.summary)}")
    return render.refusal(
        f"`{ex.execution_id}` is not resumed yet: after it failed at *{escape(step.label)}*, its "
        "on_failure steps already ran and rolled this back:\n"
        + "\n".join(lines)
        + f"\nResuming runs *{escape(step.label)}* and the steps after it on the state as it is "
        f"now (rolled back), not as it was when it failed. To resume anyway: "
        f"`/runbook retry {ex.execution_id} confirm=true`; or start a new run with "
        f"`/runbook {ex.runbook} {ex.partner}`."
    )
