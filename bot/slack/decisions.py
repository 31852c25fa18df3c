"""Approve/reject clicks: one conditional write decides; every other click changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.engine import machine
from bot.exceptions import ClaimHeld, CommandError, TransitionConflict
from bot.slack.approvals import parse_button_value, refusal

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.engine.executor import Executor
    from bot.store.executions import ExecutionStore


@dataclass(frozen=True)
class DecisionResult:
    decided: bool
    explanation: str  # for the clicker, ephemeral, when nothing changed


class DecisionService:
    def __init__(
        self,
        store: ExecutionStore,
        catalog: Callable[[], Catalog],
        executor: Callable[[], Executor],
        members_of: Callable[[str], frozenset[str]],
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.executor = executor
        self.members_of = members_of
        self.now_ms = now_ms

    def decide(self, user_id: str, raw_value: str, *, approve: bool) -> DecisionResult:
        try:
            button = parse_button_value(raw_value)
        except CommandError as error:
            return DecisionResult(False, str(error))
        ex = self.store.get(button.execution_id)
        if ex is None:
            return DecisionResult(False, f"execution {button.execution_id} does not exist; nothing changed")
        catalog = self.catalog()
        partner = catalog.partners.get(ex.partner)
        runbook = catalog.runbooks.get(ex.runbook)
        if partner is None or runbook is None:
            return DecisionResult(
                False, f"{ex.partner}/{ex.runbook} is no longer configured; nothing changed"
            )
        why_not = refusal(user_id, ex, button, partner, self.members_of, self.now_ms())
        if why_not:
            return DecisionResult(False, why_not)
        executor = self.executor()
        now = self.now_ms()
        t = machine.decide(ex, runbook, user_id, approve, now, executor.when, None)
        try:
            self.store.move(ex.execution_id, t, f"click-{user_id}", now)
        except ClaimHeld:
            return DecisionResult(
                False,
                "the run is changing right now (its approval may be expiring); nothing changed. "
                "Look at the thread in a moment",
            )
        except TransitionConflict:
            current = self.store.get(ex.execution_id)
            approval = current.approval if current else None
            if approval and approval.decision:
                who = f" by <@{approval.decided_by}>" if approval.decided_by else ""
                return DecisionResult(
                    False, f"this approval was already {approval.decision}{who}; nothing changed"
                )
            return DecisionResult(False, "the run moved on before your click landed; nothing changed")
        return DecisionResult(True, "")
