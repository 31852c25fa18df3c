"""The worker's imperative shell: one stream record in, at most one step run, one commit out.

For each state it is handed, the executor reads the item (a stale or duplicate record stops
here, with no write), asks the state machine what to do, claims the (execution, version) pair so
no other worker runs the same step, runs the step's action, and commits the outcome with one
conditional write. Cost per step: one read, two writes (claim, commit).
"""

from __future__ import annotations

import fnmatch
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.actions.base import REGISTRY, ActionContext, Effect, StepOutcome, Tripped, planned_effect
from bot.actions.preview import preview
from bot.engine import machine, planner
from bot.engine.model import Runbook, Step
from bot.exceptions import ActionError, ClaimHeld, RunbookBotError, TransitionConflict
from bot.partners.model import DrillTargetMissing
from bot.store import keys
from bot.store.codec import to_plain
from bot.store.executions import ExecutionStore
from bot.store.model import Execution

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.partners.model import Partner
    from bot.partners.sessions import PartnerSession

COMMIT_RESERVE_MS = 3_000
INJECTED_GUARD = "drill-injected-guard"  # the alarm a drill's `guard` fault finds in ALARM  # time kept back from an action so its outcome can still be committed


@dataclass(frozen=True)
class Outcome:
    """What the executor did with one record, for logs, metrics and tests."""

    execution_id: str
    action: str  # idle | stale | claimed-elsewhere | moved | executed | conflict
    detail: str = ""
    step_id: str = ""


class Executor:
    def __init__(
        self,
        store: ExecutionStore,
        catalog: Catalog,
        *,
        sessions: Callable[[Partner, Execution], PartnerSession] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        owner: str | None = None,
        crash_hook: Callable[[str, Execution, Step], None] | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        if sessions is None:
            from bot.partners.sessions import PartnerSessions

            sessions = PartnerSessions().for_run  # this executor's own; a function passes its services'
        self.sessions = sessions
        self.clock = clock
        self.sleep = sleep
        self.owner = owner or uuid.uuid4().hex
        # Tests inject crashes here ("after-effect": between an action's effect and its commit).
        self.crash_hook = crash_hook

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def advance(self, image: Execution, remaining_ms: Callable[[], int]) -> Outcome:
        """Handle the state carried by one stream record."""
        runbook = self._runbook(image)
        idle = machine.idle_reason(image, self.now_ms())
        if idle:
            return Outcome(image.execution_id, "idle", idle)

        current = self.store.get(image.execution_id)
        if current is None or current.version != image.version:
            behind = "gone" if current is None else f"item is at version {current.version}"
            return Outcome(image.execution_id, "stale", f"record at version {image.version}; {behind}")

        now = self.now_ms()
        if current.kind == planner.PLAN:
            decision = planner.next_move(current, runbook, now, self.when)
        else:
            decision = machine.plan(current, runbook, now, self.when, self.effect)
        if isinstance(decision, machine.Idle):
            return Outcome(current.execution_id, "idle", decision.reason)
        if isinstance(decision, machine.Move):
            try:
                self.store.move(current.execution_id, decision.transition, self.owner, now)
            except ClaimHeld:
                return Outcome(current.execution_id, "claimed-elsewhere", f"version {current.version}")
            except TransitionConflict as conflict:
                return Outcome(current.execution_id, "conflict", str(conflict))
            return Outcome(current.execution_id, "moved", decision.transition.status.value)

        step = decision.step
        # The claim lasts as long as the step may run (its deadline, or the invocation's end) plus
        # the commit: past that its worker is gone, and the sweeper may restart the step.
        deadline_ms = (current.step_started_at_ms or now) + step.timeout_seconds * 1000
        lease_ms = max(1_000, min(remaining_ms(), deadline_ms - now + COMMIT_RESERVE_MS))
        if not self.store.claim(current.execution_id, current.version, self.owner, now, lease_ms):
            return Outcome(current.execution_id, "claimed-elsewhere", f"version {current.version}", step.id)
        try:
            result = self._run(current, runbook, step, remaining_ms)
            if self.crash_hook:
                self.crash_hook("after-effect", current, step)
            if current.kind == planner.PLAN:
                t = planner.after_preview(current, runbook, step, result, self.now_ms(), self.when)
            else:
                t = machine.after_step(current, runbook, step, result, self.now_ms(), self.when, self.effect)
            return self._commit(current, t, "executed", step.id)
        except Exception:
            # A failure we saw (not a crash): give the claim back so the retried record can run.
            self.store.release(current.execution_id, current.version, self.owner)
            raise

    # -- running one step ------------------------------------------------------------------

    def _run(
        self, ex: Execution, runbook: Runbook, step: Step, remaining_ms: Callable[[], int]
    ) -> machine.StepResult:
        started = self.now_ms()
        deadline = (ex.step_started_at_ms or started) + step.timeout_seconds * 1000
        action = REGISTRY.get(step.action)
        if action is None:
            known = ", ".join(sorted(REGISTRY))
            return machine.Failed(
                started, "InvalidInput", f"unknown action {step.action!r}; known: {known}", False
            )

        def budget() -> int:
            return min(remaining_ms() - COMMIT_RESERVE_MS, deadline - self.now_ms())

        try:
            inputs = self._inputs(ex, step)
            plan = ex.kind == planner.PLAN
            ctx = self._context(
                ex,
                step,
                budget,
                resumable=getattr(action, "resumable", False),
                guardable=getattr(action, "guardable", False) and not plan,  # a plan changes nothing to guard
            )
            # A plan previews: reads run for real, changes are computed and never applied.
            outcome: StepOutcome = preview(action, ctx, inputs) if plan else action.run(ctx, inputs)
        except ActionError as error:
            return self._failed(ex, step, started, error.code, str(error), error.retryable)
        except DrillTargetMissing as error:
            return machine.Failed(started, "DrillTargetMissing", str(error), False)
        except RunbookBotError as error:  # expressions, inputs: the runbook or its data is wrong
            return machine.Failed(started, "InvalidInput", str(error), False)
        except Exception as error:  # every other error becomes a catalogued code on the timeline
            code, message = _error_code(error)
            return self._failed(ex, step, started, code, message, None)

        if outcome.status == "checkpoint":
            wake = None if outcome.due_in_seconds is None else int(outcome.due_in_seconds * 1000)
            return machine.Checkpointed(
                started, outcome.checkpoint or {}, outcome.summary, wake, paused=outcome.paused
            )
        return machine.Succeeded(
            started, outcome.summary, outcome.outputs, outcome.figures, end_run=step.action == "succeed"
        )

    def _failed(
        self, ex: Execution, step: Step, started: int, code: str, message: str, retryable: bool | None
    ) -> machine.Failed:
        if retryable is None:
            retryable = self.catalog.errors.is_retryable(code)
        if step.retry.codes:
            retryable = retryable and code in step.retry.codes
        return machine.Failed(started, code, message, retryable, _backoff_ms(ex, step))

    def _inputs(self, ex: Execution, step: Step) -> dict[str, Any]:
        from bot.engine.expressions import render

        rendered = render(step.inputs, self.scope(ex))
        return dict(rendered) if isinstance(rendered, dict) else {}

    def _context(
        self,
        ex: Execution,
        step: Step,
        budget: Callable[[], int],
        *,
        resumable: bool = False,
        guardable: bool = False,
    ) -> ActionContext:
        partner = self.partner(ex)
        checkpoint = ex.checkpoint
        save_progress: Callable[[dict[str, Any]], None] = lambda state: None  # noqa: E731
        if resumable:
            # A crash between commits loses nothing saved since: the progress item is newer.
            checkpoint = self.store.progress(ex.execution_id, step.id) or checkpoint

            def save_progress(state: dict[str, Any]) -> None:
                self.store.save_progress(ex.execution_id, step.id, state, self.now_ms())

        return ActionContext(
            execution_id=ex.execution_id,
            step_id=step.id,
            attempt=ex.attempt,
            idempotency_key=keys.idempotency_key(ex.execution_id, step.id, ex.attempt, ex.reopened),
            partner=partner,
            aws=self.sessions(self.catalog.partners[ex.partner], ex),  # the production file: drills guard it
            params=ex.params,
            checkpoint=checkpoint,
            drill=ex.drill,
            remaining_ms=budget,
            stop_at_ms=ex.drill_until_ms if ex.drill and ex.phase == "main" else None,
            clock=self.clock,
            sleep=self.sleep,
            save_progress=save_progress,
            **(self._guard(ex, step, partner) if guardable else {}),
        )

    def _guard(self, ex: Execution, step: Step, partner: Partner) -> dict[str, Any]:
        """A guarded step's alarms (its own; a risky step's partner's too), those the approvers
        resumed it over (in ALARM when it paused: only another one pauses it again), and the
        alarm handler's pause request, read from the state item at each safe point."""
        alarms = guard_patterns(step, partner)
        injected = float(ex.drill_faults.get("guard", 0) or 0) if ex.drill else 0.0
        if not alarms and not injected:
            return {}
        accepted = machine.guard_accepted(ex, step)
        checks = [0]

        def pause_requested() -> Tripped | None:
            checks[0] += 1
            if injected and INJECTED_GUARD not in accepted:
                # A drill's `guard` fault: seeded by the step's attempt and the check, so a replayed
                # record injects the same.
                key = keys.idempotency_key(ex.execution_id, step.id, ex.attempt, ex.reopened)
                if random.Random(f"{key}#guard#{ex.version}#{checks[0]}").random() < injected:
                    return Tripped(
                        f"drill: injected guard alarm {INJECTED_GUARD} is in ALARM (faults guard={injected:g})",
                        (INJECTED_GUARD,),
                    )
            if not alarms:
                return None
            request = self.store.pause_request(ex.execution_id)
            alarm = str((request or {}).get("alarm") or "")
            if not alarm or alarm in accepted or not any(fnmatch.fnmatchcase(alarm, p) for p in alarms):
                return None
            reason = str((request or {}).get("reason") or "")
            return Tripped(f"guard alarm {alarm} entered ALARM" + (f": {reason}" if reason else ""), (alarm,))

        return {"guard_alarms": alarms, "guard_accepted": accepted, "pause_requested": pause_requested}

    def partner(self, ex: Execution) -> Partner:
        """The run's partner; in a drill, its drill view (every table and the store replaced by
        its drill target). Raises DrillTargetMissing if the partner file lost a drill target."""
        partner = self.catalog.partners[ex.partner]
        return partner.for_drill() if ex.drill else partner

    def scope(self, ex: Execution) -> dict[str, Any]:
        """What expressions see: params, partner, earlier steps' outputs, the execution."""
        return {
            "params": ex.params,
            "partner": partner_scope(self.partner(ex)),
            "steps": {
                sid: {"outputs": self.store.outputs(ex.execution_id, rec), "outcome": rec.outcome}
                for sid, rec in ex.steps.items()
            },
            "execution": {
                "id": ex.execution_id,
                "requested_by": ex.requested_by,
                "drill": ex.drill,
                "attempt": ex.attempt,
                "runbook": ex.runbook,
            },
        }

    # -- what the state machine asks of us -------------------------------------------------

    def when(self, ex: Execution, step: Step) -> bool:
        if not step.when:
            return True
        from bot.engine.expressions import evaluate, render

        text = step.when.strip()
        value = render(text, self.scope(ex)) if "{{" in text else evaluate(text, self.scope(ex))
        return bool(value)

    def effect(self, ex: Execution, step: Step) -> Effect:
        action = REGISTRY.get(step.action)
        if action is None:
            return Effect(f"runs {step.action}", fingerprint=step.action)
        try:
            inputs = self._inputs(ex, step)
            ctx = self._context(ex, step, lambda: 30_000)
            planned = planned_effect(action, ctx, inputs)
        except Exception as error:  # the approver must still see what will run
            # Nobody can say how big it is, so it needs the approvers a critical change needs.
            return Effect(
                f"runs {step.action} (its effect could not be estimated: {error})",
                fingerprint="unknown",
                risk="critical",
            )
        if ex.plan_of:  # started from a plan: show what it planned beside what is now
            return planner.beside_plan(planned, self.store.get(ex.plan_of, consistent=False), step.id)
        return planned

    def _commit(self, ex: Execution, t: machine.Transition, action: str, step_id: str = "") -> Outcome:
        try:
            self.store.commit(ex.execution_id, t)
        except TransitionConflict as conflict:
            return Outcome(ex.execution_id, "conflict", str(conflict), step_id)
        return Outcome(ex.execution_id, action, t.status.value, step_id)

    def _runbook(self, ex: Execution) -> Runbook:
        try:
            return self.catalog.runbooks[ex.runbook]
        except KeyError:
            raise RunbookBotError(
                f"execution {ex.execution_id} names runbook {ex.runbook!r}, which this deployment "
                f"does not have (runbooks: {', '.join(sorted(self.catalog.runbooks))})"
            ) from None


def guard_patterns(step: Step, partner: Partner) -> tuple[str, ...]:
    """The guard alarms of `step` (of an action that checks them): its own, and for a risky
    step its partner's."""
    alarms = (*step.guard_alarms, *(partner.guard_alarms if step.risk.asks_approval else ()))
    return tuple(dict.fromkeys(alarms))


def partner_scope(partner: Partner) -> dict[str, Any]:
    """The partner as expressions see it (a drill passes its drill view)."""
    plain = to_plain(partner)
    plain.pop("source", None)
    return dict(plain)


def _backoff_ms(ex: Execution, step: Step) -> int:
    """Exponential backoff with equal jitter, seeded by the attempt so a replayed record agrees."""
    ceiling = min(step.retry.max_seconds, step.retry.base_seconds * 2 ** (ex.attempt - 1))
    rng = random.Random(keys.idempotency_key(ex.execution_id, step.id, ex.attempt, ex.reopened))
    return int((ceiling / 2 + rng.uniform(0, ceiling / 2)) * 1000)


def _error_code(error: Exception) -> tuple[str, str]:
    """A code from the error catalog for any exception an action let through."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        return str(err.get("Code") or "ClientError"), str(err.get("Message") or error)
    if isinstance(error, ReadTimeoutError):
        return "ReadTimeout", str(error)
    if isinstance(error, ConnectTimeoutError | EndpointConnectionError):
        return "ConnectTimeout", str(error)
    return "InternalError", f"{type(error).__name__}: {error}"
