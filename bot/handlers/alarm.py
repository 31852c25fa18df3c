"""Alarm-driven starts: a CloudWatch alarm entering ALARM starts the partner's mapped runbook.

A flapping alarm never starts a second run: creation takes the partner+runbook lock in the
same transaction, and the lock is only taken over once the run holding it has ended.
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


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = SANDBOX()
    starts = start_for_alarm(event, services.store, services.catalog, services.now_ms())
    for start in starts:
        logger.info("alarm start", extra=start.__dict__)
    if not starts:
        logger.info(
            "no runbook mapped to this alarm", extra={"alarm": (event.get("detail") or {}).get("alarmName")}
        )
    return {"starts": [s.__dict__ for s in starts]}


if on_lambda():  # init, not the first event
    SANDBOX.warm()
