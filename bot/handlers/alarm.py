"""Alarm-driven starts and pauses: a CloudWatch alarm entering ALARM starts the partner's mapped
runbook, and asks the partner's running guarded steps to pause.

A flapping alarm never starts a second run: creation takes the partner+runbook lock in the
same transaction, and the lock is only taken over once the run holding it has ended.

A guard alarm (the partner's `guard_alarms`, or a step's) pauses runs without moving them: the
partner's active runs are found through their lock items (partner+table, partner+runbook), and a
run whose current step that alarm guards gets a `pause_request` on its state item, a conditional
update that leaves the version and claims alone. The worker running the step obeys it at its
next safe point (bot/actions/guard.py); this function never moves a claimed step itself.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from bot.handlers.services import Sandbox, Services, on_lambda

logger = Logger()
SANDBOX = Sandbox(Services.for_function)


@dataclass(frozen=True)
class AlarmStart:
    alarm_name: str
    partner: str
    runbook: str
    execution_id: str
    started: bool  # False: a run for this partner+runbook was already active
    active_execution_id: str = ""


def start_for_alarm(event: dict[str, Any], store: Any, catalog: Any, now_ms: int) -> list[AlarmStart]:
    from bot.engine.params import bind_parameters
    from bot.engine.starts import new_execution, new_execution_id, run_locks
    from bot.store import keys

    detail = event.get("detail") or {}
    alarm_name = str(detail.get("alarmName") or "")
    state = str((detail.get("state") or {}).get("value") or "")
    if event.get("detail-type") != "CloudWatch Alarm State Change" or not alarm_name:
        raise ValueError(
            "not a CloudWatch Alarm State Change event (expected detail-type 'CloudWatch Alarm State Change' "
            "and detail.alarmName)"
        )
    if state != "ALARM":
        return []
    starts: list[AlarmStart] = []
    account = str(event.get("account") or "")
    for partner in catalog.partners.values():
        if account and partner.account_id != account:
            continue  # forwarded from another partner's account: its names may match our patterns
        for mapping in partner.alarms:
            if not fnmatch.fnmatchcase(alarm_name, mapping.pattern):
                continue
            runbook = catalog.runbooks[mapping.runbook]
            params = bind_parameters(runbook, partner, {k: str(v) for k, v in mapping.params.items()})
            if not partner.channels:
                logger.error("partner has no channel for alarm-started runs", extra={"partner": partner.name})
                continue
            ex = new_execution(
                new_execution_id(f"alarm:{event.get('id') or alarm_name}:{partner.name}:{runbook.name}"),
                runbook,
                partner,
                params,
                requested_by=f"alarm:{alarm_name}",
                channel=partner.channels[0],
                now_ms=now_ms,
                trigger="alarm",
            )
            # One active run per partner+runbook (a flapping alarm), and per table it may change.
            locks = [
                keys.active_run_key(partner.name, runbook.name),
                *run_locks(runbook, partner, params, drill=False),
            ]
            holder = store.create_locked(ex, locks)
            starts.append(
                AlarmStart(
                    alarm_name, partner.name, runbook.name, ex.execution_id, holder is None, holder or ""
                )
            )
            break  # the first matching mapping of a partner wins
    return starts


@dataclass(frozen=True)
class AlarmPause:
    alarm_name: str
    partner: str
    execution_id: str
    step_id: str
    requested: bool  # False: the run already had a request, or stopped running meanwhile


def pause_for_alarm(event: dict[str, Any], store: Any, catalog: Any, now_ms: int) -> list[AlarmPause]:
    """Ask every running step this alarm guards to pause (see the module docstring)."""
    from bot.engine.executor import guard_patterns
    from bot.store import keys

    detail = event.get("detail") or {}
    alarm_name = str(detail.get("alarmName") or "")
    state = detail.get("state") or {}
    if event.get("detail-type") != "CloudWatch Alarm State Change" or state.get("value") != "ALARM":
        return []
    reason = str(state.get("reason") or "")[:500]
    account = str(event.get("account") or "")
    pauses: list[AlarmPause] = []
    for partner in catalog.partners.values():
        if account and partner.account_id != account:
            continue
        guarded = {
            rb.name: {
                s.id: guard_patterns(s, partner) for s in (*rb.steps, *rb.on_failure) if _guardable(s.action)
            }
            for rb in catalog.runbooks.values()
        }
        patterns = {p for steps in guarded.values() for ps in steps.values() for p in ps}
        if not any(fnmatch.fnmatchcase(alarm_name, p) for p in patterns):
            continue
        tables = {t.name for t in partner.tables.values()} | set(partner.drill_target.values())
        locks = [keys.table_lock_key(partner.name, t) for t in sorted(tables)]
        locks += [keys.active_run_key(partner.name, rb) for rb in sorted(catalog.runbooks)]
        for execution_id in store.lock_holders(locks):
            ex = store.get(execution_id)
            if ex is None or ex.partner != partner.name or ex.status.terminal or not ex.cursor:
                continue
            step_patterns = guarded.get(ex.runbook, {}).get(ex.cursor, ())
            if not any(fnmatch.fnmatchcase(alarm_name, p) for p in step_patterns):
                continue
            requested = store.request_pause(execution_id, alarm_name, reason, now_ms)
            pauses.append(AlarmPause(alarm_name, partner.name, execution_id, ex.cursor, requested))
    return pauses


def _guardable(action: str) -> bool:
    from bot.actions import REGISTRY

    return bool(getattr(REGISTRY.get(action), "guardable", False))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = SANDBOX()
    pauses = pause_for_alarm(event, services.store, services.catalog, services.now_ms())
    for pause in pauses:
        logger.info("guard pause requested", extra=pause.__dict__)
    starts = start_for_alarm(event, services.store, services.catalog, services.now_ms())
    for start in starts:
        logger.info("alarm start", extra=start.__dict__)
    if not starts:
        logger.info(
            "no runbook mapped to this alarm", extra={"alarm": (event.get("detail") or {}).get("alarmName")}
        )
    return {"starts": [s.__dict__ for s in starts], "pauses": [p.__dict__ for p in pauses]}


if on_lambda():  # init, not the first event
    SANDBOX.warm()
