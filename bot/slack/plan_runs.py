"""The Run this plan button: the real run, with the plan's parameters, started from its message.

The same rules as `/runbook <runbook> <partner>`: the partner's channels, the table locks (no
force from a button: an approver who must override a lock types the command). One run per plan:
the run's id is derived from the plan's, so a second click (or a redelivered one) names the run
the first started and starts nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.engine.planner import PLAN
from bot.slack.grammar import new_execution_id
from bot.slack.plan_render import plan_id_of

if TYPE_CHECKING:
    from bot.slack.commands import CommandService

logger = logging.getLogger(__name__)
PLAN_FRESH_SECONDS = 24 * 3600  # an older plan says too little about the partner's state now


@dataclass(frozen=True)
class PlanStart:
    started: bool
    text: str  # for the clicker, ephemeral: the run it started, or why nothing was started


def run_id_for(plan_id: str) -> str:
    return new_execution_id(f"run-of-plan:{plan_id}")


def start_from_plan(commands: CommandService, user_id: str, channel_id: str, raw_value: str) -> PlanStart:
    """Start the run a plan describes, for `user_id` clicking in `channel_id`."""
    from bot.engine.starts import new_execution, run_locks

    try:
        plan_id = plan_id_of(raw_value)
    except ValueError as error:
        return PlanStart(False, str(error))
    plan = commands.store.get(plan_id)
    if plan is None or plan.kind != PLAN:
        return PlanStart(False, f"there is no plan `{plan_id}` (plans are kept 90 days); nothing was started")
    catalog = commands.catalog()
    runbook = catalog.runbooks.get(plan.runbook)
    partner = catalog.partners.get(plan.partner)
    if runbook is None or partner is None:
        return PlanStart(
            False, f"{plan.runbook} for {plan.partner} is no longer configured; nothing was started"
        )
    if channel_id != plan.channel or not partner.may_run_in(channel_id):
        where = ", ".join(f"<#{c}>" for c in partner.channels or (plan.channel,))
        return PlanStart(False, f"{partner.display_name}'s runbooks run in {where}; nothing was started")
    if plan.status.value != "SUCCEEDED":
        return PlanStart(
            False, f"plan `{plan_id}` is {plan.status.value.lower()}, not ready; nothing was started"
        )
    if runbook.version != plan.runbook_version:
        return PlanStart(
            False,
            f"`{runbook.name}` changed since this plan (v{plan.runbook_version[:7]} → v{runbook.version[:7]}); "
            f"plan it again: `/runbook plan {runbook.name} {partner.name}`",
        )
    now_ms = commands.now_ms()
    if now_ms - plan.updated_at_ms > PLAN_FRESH_SECONDS * 1000:
        return PlanStart(
            False,
            f"plan `{plan_id}` is more than a day old; plan again: `/runbook plan {runbook.name} {partner.name}`",
        )
    params = dict(plan.params)
    locks = run_locks(runbook, partner, params, drill=False)
    run_id = run_id_for(plan_id)
    holder = next((h for h in map(commands.store.lock_holder, locks) if h and h != run_id), None)
    if holder:
        return PlanStart(
            False,
            f"`{holder}` is already running on a table this run would change; nothing was started. Follow "
            f"it with `/runbook status {holder}`; an approver may start the run past it with "
            f"`/runbook {runbook.name} {partner.name} force=true`",
        )
    ex = new_execution(
        run_id,
        runbook,
        partner,
        params,
        requested_by=user_id,
        channel=plan.channel,
        now_ms=now_ms,
        trigger="button",
        plan_of=plan_id,
    )
    held = commands.store.create_locked(ex, locks)
    if held == run_id:
        return PlanStart(False, f"this plan already started run `{run_id}`: `/runbook status {run_id}`")
    if held:
        return PlanStart(
            False, f"`{held}` has just started on a table this run would change; nothing was started"
        )
    logger.info("run started from a plan", extra={"execution_id": run_id, "plan": plan_id})
    return PlanStart(
        True,
        f"Started `{runbook.name}` for `{partner.name}` from plan `{plan_id}`: execution `{run_id}`. Progress "
        f"is in the channel's thread; `/runbook status {run_id}` any time.",
    )
