"""An execution as it is kept in the executions table, and the events on its timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    APPROVED = "APPROVED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT})
ACTIVE = frozenset(Status) - TERMINAL


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"  # only for steps that span invocations (checkpointed) or wait
    STEP_FINISHED = "step_finished"
    STEP_FAILED = "step_failed"
    STEP_SKIPPED = "step_skipped"
    STEP_RETRY = "step_retry"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_VOTED = "approval_voted"  # one approver approved; the quorum is not met yet
    APPROVAL_REMINDER = "approval_reminder"  # half the expiry passed and nobody decided
    CANCEL_REQUESTED = "cancel_requested"
    SLA_WARNING = "sla_warning"
    RUN_SUCCEEDED = "run_succeeded"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_TIMED_OUT = "run_timed_out"
    RUN_RESUMED = "run_resumed"  # `/runbook retry`: an ended run continues from its failed step


@dataclass(frozen=True)
class TimelineEvent:
    """One line of the incident timeline; `seq` orders it within its execution (1, 2, ...)."""

    seq: int
    at_ms: int
    kind: EventKind
    summary: str
    step_id: str = ""
    actor: str = ""  # Slack user id, "alarm:<name>", or "" for the bot
    duration_ms: int | None = None
    error_code: str = ""
    figures: dict[str, Any] = field(default_factory=dict)  # key figures shown with the event


@dataclass(frozen=True)
class StepRecord:
    """What became of one step: kept on the execution for status, timeline and references."""

    step_id: str
    outcome: str  # succeeded | failed | skipped
    attempts: int
    started_at_ms: int
    finished_at_ms: int
    outputs: dict[str, Any] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""
    spilled: bool = False  # outputs too large for the state item live in their own item


@dataclass(frozen=True)
class Vote:
    """One approver's approval of a pending step, with what they said (may be empty)."""

    user: str
    at_ms: int
    comment: str = ""


@dataclass(frozen=True)
class Approval:
    step_id: str
    requested_at_ms: int
    expires_at_ms: int
    effect: str  # what will happen, stated exactly
    decision: str = ""  # "" | approved | rejected | expired
    decided_by: str = ""  # the rejecter, or the approver whose vote met the quorum
    decided_at_ms: int = 0
    fingerprint: str = ""  # the material facts of the effect; a change after approval asks again
    required: int = 1  # distinct approvers needed (the partner's `approvals` for `risk`)
    risk: str = "high"  # high | critical: the effect's risk level, which sets `required`
    votes: tuple[Vote, ...] = ()  # approvals so far, in order; each approver at most once
    reason: str = ""  # why it was rejected, as the rejecter wrote it (or why there is none)
    version: int = 0  # the run's version when it was asked: what its buttons carry (0: older runs)
    remind_at_ms: int = 0  # when to remind the approvers if nobody decided (0: no reminder due)
    kind: str = ""  # "": approve a risky step; "guard": resume or abort a step a guard alarm paused

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> Approval:
        votes = tuple(Vote(**v) for v in data.get("votes") or ())
        return cls(**{**data, "votes": votes})

    def voted(self, user: str) -> Vote | None:
        return next((v for v in self.votes if v.user == user), None)


@dataclass(frozen=True)
class Execution:
    execution_id: str
    runbook: str
    runbook_version: str
    partner: str
    status: Status
    version: int
    params: dict[str, Any]
    requested_by: str
    channel: str
    created_at_ms: int
    updated_at_ms: int
    trigger: str = "slash"  # slash | alarm | drill | button (a plan's Run this plan)
    kind: str = "run"  # run | plan (a dry run: reads for real, changes nothing; no approval, no lock)
    plan_of: str = ""  # a run started from a plan: the plan's execution id
    forced_over: str = ""  # the active run whose table lock an approver overrode with force=true
    response_url: str = ""  # the slash command's, for telling the requester (Slack honours it 30 min)
    drill: bool = False
    drill_faults: dict[str, float] = field(default_factory=dict)  # injected on the partner's clients
    drill_until_ms: int | None = None  # a drill's time limit: it ends TIMED_OUT at this time
    cursor: str | None = None  # id of the next step to run; None when no step is left
    phase: str = "main"  # main | on_failure
    attempt: int = 1  # attempt number of the step at `cursor`
    step_started_at_ms: int = 0  # when the step at `cursor` first started (0: not yet)
    checkpoint: dict[str, Any] | None = None  # action state to resume the step at `cursor`
    steps: dict[str, StepRecord] = field(default_factory=dict)
    approval: Approval | None = None
    approved_steps: tuple[str, ...] = ()
    cancel_requested_by: str = ""
    # The alarm handler's request that a guarded step pause ({alarm, reason, at_ms}): set without
    # moving the version; the worker obeys it at the step's next safe point, the pause removes it.
    pause_request: dict[str, Any] | None = None
    error: dict[str, str] = field(default_factory=dict)  # code, message, step of the failure
    timeline: tuple[TimelineEvent, ...] = ()
    due_at_ms: int | None = None  # when the sweeper must look again (see due_reason)
    due_reason: str = (
        ""  # wake: sleeping until due | reminder, expiry: an approval's | stuck: progress deadline
    )
    resumes: int = 0  # times the sweeper restarted the step at `cursor` after its worker stopped
    sla_warned: bool = False
    sla_warn_at: float = 0.8  # share of the resolution window after which the timeline warns
    approval_timeout_minutes: int = 30  # the partner's, when the run started
    quorum: dict[str, int] = field(default_factory=dict)  # risk level -> approvers needed (the partner's)
    end_status: str = ""  # on the on_failure path: the status the run ends with (FAILED, TIMED_OUT)
    sla_response_minutes: int = 0
    sla_resolution_minutes: int = 0
    total_steps: int = 0
    expires_at: int | None = None  # TTL (epoch seconds), set when the run ends
    reopened: int = 0  # times `/runbook retry` resumed it: part of its idempotency keys from then on

    @property
    def last_seq(self) -> int:
        return self.timeline[-1].seq if self.timeline else 0
