"""Starting a run: the execution as first written, and the locks it takes. Used by the slash
command, drills and the alarm handler alike."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from bot.engine import machine
from bot.engine.model import Runbook
from bot.partners.model import Partner
from bot.store import keys
from bot.store.model import Execution, Status

# Actions that change a partner table: a run with one of these locks the tables it may change.
CHANGING_ACTIONS = frozenset({"dynamodb.replay", "dynamodb.set_capacity"})


def new_execution_id(seed: str) -> str:
    """Deterministic from the request (Slack's trigger, an alarm event's id), so a redelivered
    request names the same run and creates nothing twice."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "rb-" + base64.b32encode(digest).decode().lower()[:10]


def run_locks(
    runbook: Runbook, partner: Partner, params: dict[str, Any], *, drill: bool
) -> list[dict[str, str]]:
    """The (partner, table) locks a run needs: one per table its changing steps may write, by the
    table's real name (a drill's are its drill tables, never production's). Read-only runbooks
    take none. A table input that depends on earlier steps' outputs locks every partner table."""
    from bot.engine.executor import partner_scope
    from bot.engine.expressions import render
    from bot.exceptions import RunbookBotError

    view = partner.for_drill() if drill else partner
    scope = {
        "params": params,
        "partner": partner_scope(view),
        "steps": {},
        "execution": {"id": "", "requested_by": "", "drill": drill, "attempt": 1, "runbook": runbook.name},
    }
    names: set[str] = set()
    for step in (*runbook.steps, *runbook.on_failure):
        if step.action not in CHANGING_ACTIONS:
            continue
        try:
            table = render(step.inputs.get("table", ""), scope)
        except RunbookBotError:
            table = None
        if isinstance(table, str) and table:
            names.add(table)
        else:
            names.update(t.name for t in view.tables.values())
    return [keys.table_lock_key(partner.name, name) for name in sorted(names)]


def new_execution(
    execution_id: str,
    runbook: Runbook,
    partner: Partner,
    params: dict[str, Any],
    *,
    requested_by: str,
    channel: str,
    now_ms: int,
    trigger: str,
    drill: bool = False,
    drill_faults: dict[str, float] | None = None,
    drill_seconds: int = 0,
    forced_over: str = "",
    response_url: str = "",
    kind: str = "run",
    plan_of: str = "",
) -> Execution:
    """A run as it is first written: PENDING at version 0, its first step at the cursor."""
    return Execution(
        execution_id=execution_id,
        runbook=runbook.name,
        runbook_version=runbook.version,
        partner=partner.name,
        status=Status.PENDING,
        version=0,
        params=params,
        requested_by=requested_by,
        channel=channel,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
        trigger=trigger,
        kind=kind,
        plan_of=plan_of,
        forced_over=forced_over,
        response_url=response_url,
        drill=drill,
        drill_faults=dict(drill_faults or {}),
        drill_until_ms=now_ms + drill_seconds * 1000 if drill and drill_seconds else None,
        cursor=runbook.steps[0].id if runbook.steps else None,
        total_steps=len(runbook.steps),
        sla_response_minutes=partner.sla.response_minutes,
        sla_resolution_minutes=partner.sla.resolution_minutes,
        sla_warn_at=partner.sla.warn_at,
        approval_timeout_minutes=partner.approval_timeout_minutes,
        quorum=partner.quorum(),
        # If no worker picks the run up (a lost record), the sweeper wakes it after the grace period.
        due_at_ms=now_ms + machine.GRACE_MS,
        due_reason="stuck",
    )
