"""The runbook model: what a validated runbook file becomes. Plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ParamType(StrEnum):
    STRING = "string"
    INT = "int"
    NUMBER = "number"
    BOOL = "bool"
    ENUM = "enum"
    DURATION = "duration"  # "90s", "15m", "2h"; held as whole seconds


class Risk(StrEnum):
    LOW = "low"
    HIGH = "high"  # needs an approver's decision before it runs
    # Needs as many distinct approvers as a critical change: the partner's `approvals: {critical: n}`
    # (a risky action may also find its effect critical, e.g. on-demand capacity on a large table).
    CRITICAL = "critical"

    @property
    def asks_approval(self) -> bool:
        """High and critical steps wait for their approvers before they run; low ones do not."""
        return self is not Risk.LOW


@dataclass(frozen=True)
class Parameter:
    name: str
    type: ParamType
    description: str = ""
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    values: tuple[str, ...] = ()  # for enum
    max_length: int = 256
    refers_to: str = ""  # table | index | key_attribute: checked against the partner file at start
    partner_limit: str = (
        ""  # a partner capacity limit that caps it (replay_budget_share, max_write_units, ...)
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed step is tried again (SSM: maxAttempts). `on` narrows the catalog's retryable codes."""

    max_attempts: int = 1
    base_seconds: float = 1.0
    max_seconds: float = 30.0
    codes: tuple[str, ...] = ()  # empty: every code the error catalog marks retryable


@dataclass(frozen=True)
class Step:
    id: str
    action: str
    title: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)  # templated with {{ expr }}
    when: str | None = None  # expression; false skips the step
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: int = 300
    risk: Risk = Risk.LOW
    on_failure: str = "abort"  # abort | continue | step:<id>   (SSM: onFailure)
    is_critical: bool = True  # a failed non-critical step never fails the run (SSM: isCritical)
    next: str | None = None  # SSM: nextStep; default is the following step
    is_end: bool = False  # SSM: isEnd
    # CloudWatch alarm names or fnmatch patterns: one in ALARM pauses the step at its next safe
    # point (SSM: AlarmConfiguration). A risky step is also guarded by its partner's.
    guard_alarms: tuple[str, ...] = ()
    line: int = 0  # where it stands in its file, for messages

    @property
    def label(self) -> str:
        """How people see the step: its title, or its id when it has none."""
        return self.title or self.id


@dataclass(frozen=True)
class Runbook:
    name: str
    title: str
    description: str
    parameters: tuple[Parameter, ...]
    steps: tuple[Step, ...]
    on_failure: tuple[Step, ...] = ()  # run after the main path fails, before FAILED
    version: str = ""  # content hash of the file, recorded on every execution
    source: str = ""  # path it was loaded from

    def step(self, step_id: str) -> Step:
        for step in (*self.steps, *self.on_failure):
            if step.id == step_id:
                return step
        raise KeyError(f"runbook {self.name!r} has no step {step_id!r}")

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def approval_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in (*self.steps, *self.on_failure) if s.risk.asks_approval)
