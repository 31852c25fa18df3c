"""What an action is: the contract between the engine and one kind of step.

An action gets its templated inputs and an `ActionContext`, does its work through the partner's
boto3 session, and returns a `StepOutcome`. Actions raise `ActionError(code, message)` with a
code from runbooks/errors.yaml; boto3 `ClientError`s are converted by the engine. Effects must be
idempotent under `ctx.idempotency_key`: a crash between effect and commit replays the same key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bot.partners.model import Partner
    from bot.partners.sessions import PartnerSession


@dataclass(frozen=True)
class ActionContext:
    execution_id: str
    step_id: str
    attempt: int
    idempotency_key: str
    partner: Partner
    aws: PartnerSession  # boto3 clients for the partner's account and region
    params: dict[str, Any]
    checkpoint: dict[str, Any] | None  # what the last invocation saved for this step
    drill: bool = False
    remaining_ms: Callable[[], int] = field(default=lambda: 60_000)
    stop_at_ms: int | None = None  # a drill's time limit: long steps stop at their next safe point
    clock: Callable[[], float] = field(default=time.time)
    sleep: Callable[[float], None] = field(default=time.sleep)
    # Resumable actions save their cursor after each page; a crash resumes from the last save.
    save_progress: Callable[[dict[str, Any]], None] = field(default=lambda state: None)
    # Guard alarms (names or fnmatch patterns) a paging action checks between pages
    # (bot/actions/guard.py); the alarms the approvers resumed over (in ALARM, they pause no more);
    # and the alarm handler's request to pause, if it made one for this step.
    guard_alarms: tuple[str, ...] = ()
    guard_accepted: tuple[str, ...] = ()
    pause_requested: Callable[[], Tripped | None] = field(default=lambda: None)

    def should_checkpoint(self, reserve_ms: int = 5_000) -> bool:
        """True when the invocation has too little time left to do another unit of work, or the
        run must stop (a drill past its time limit): the step saves its place and hands back, and
        the worker ends the run at that boundary."""
        if self.stop_at_ms is not None and self.clock() * 1000 >= self.stop_at_ms:
            return True
        return self.remaining_ms() < reserve_ms


@dataclass(frozen=True)
class Tripped:
    """Why a guarded step paused: the guard alarms in ALARM (names), or another reason."""

    why: str
    alarms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Effect:
    """What a risky step would change, computed by the worker (never the ingress) before it asks
    for approval, and again after approval before the step runs."""

    text: str  # for the approver, stated exactly
    fingerprint: str = ""  # the material facts (table, setting before → after); a change asks again
    changes: bool = True  # False: nothing to change, so nothing to approve (the step is skipped)
    reason: str = ""  # why nothing changes, when it does not
    # high | critical: how many approvers it needs comes from the partner's `approvals` for this
    # level. The action that computes the effect decides: it alone knows what the change touches.
    risk: str = "high"


@dataclass(frozen=True)
class StepOutcome:
    """`succeeded` with outputs, or `checkpoint` with the state to resume from next record."""

    status: str  # succeeded | checkpoint
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: str = ""  # one line for the timeline: what the step found or did
    figures: dict[str, Any] = field(default_factory=dict)  # key numbers shown with the summary
    checkpoint: dict[str, Any] | None = None
    due_in_seconds: float | None = None  # checkpoint only: wake again after this long (wait)
    paused: Tripped | None = None  # checkpoint only: why the step stopped at a safe point

    @classmethod
    def done(cls, summary: str, outputs: dict[str, Any] | None = None, **figures: Any) -> StepOutcome:
        return cls("succeeded", outputs or {}, summary, figures)

    @classmethod
    def resume_later(
        cls, checkpoint: dict[str, Any], summary: str = "", due_in_seconds: float | None = None
    ) -> StepOutcome:
        return cls("checkpoint", {}, summary, {}, checkpoint, due_in_seconds)

    @classmethod
    def pause(cls, checkpoint: dict[str, Any], why: Tripped, summary: str = "") -> StepOutcome:
        """Stop at this safe point (`checkpoint` is where to go on from) until an approver resumes."""
        return cls("checkpoint", {}, summary, {}, checkpoint, None, why)


class Action(Protocol):
    name: str
    outputs: tuple[str, ...]  # output names runbooks may reference as steps.<id>.outputs.<name>
    inputs_schema: dict[str, Any]  # JSON Schema of the inputs, checked by `runbook-bot validate`
    always_high_risk: bool  # e.g. replays and capacity changes: the schema forbids `risk: low`
    # Actions that page through data set `resumable = True` and call `ctx.save_progress`; those
    # that check guard alarms between pages set `guardable = True` (runbooks may guard only them).

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome: ...

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        """For approval messages: exactly what running this step will change."""
        ...


def planned_effect(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> Effect:
    """The action's `Effect` when it computes one (risky actions do), else its description."""
    compute = getattr(action, "effect", None)
    if compute is not None:
        effect: Effect = compute(ctx, inputs)
        return effect
    return Effect(action.describe_effect(ctx, inputs), fingerprint=action.name)


REGISTRY: dict[str, Action] = {}


def register(action: Action) -> Action:
    if action.name in REGISTRY:
        raise ValueError(f"action {action.name!r} is registered twice")
    REGISTRY[action.name] = action
    return action
