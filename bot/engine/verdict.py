"""Did the drill's detection and recovery work? A pure judgement over the finished execution.

Detection steps read and judge (describe, metrics, hot keys, queries, consistency, preflight);
recovery steps change something (replays, capacity). A drill passes when every detection and
recovery step it reached succeeded and the run ended SUCCEEDED; injected faults that retries
absorbed are listed, since absorbing them is what the drill rehearses. A drill that injects a
guard alarm (`faults=guard=…`) also needs the run to have paused for it once a guarded recovery
step ran: the pause, and the approvers' resume, is what it rehearses.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bot.engine.model import Runbook
from bot.store.model import EventKind, Execution, Status

DETECTION = frozenset(
    {
        "dynamodb.describe",
        "cloudwatch.metrics",
        "dynamodb.hot_keys",
        "dynamodb.query",
        "dynamodb.consistency_check",
        "preflight",
        "check",
    }
)
RECOVERY = frozenset({"dynamodb.replay", "dynamodb.set_capacity"})
GUARDED = frozenset({"dynamodb.replay"})  # actions that check guard alarms between pages


@dataclass(frozen=True)
class StepVerdict:
    step_id: str
    action: str
    outcome: str  # succeeded | failed | skipped | not reached
    attempts: int


@dataclass(frozen=True)
class DrillReport:
    execution_id: str
    runbook: str
    status: Status
    detection: tuple[StepVerdict, ...]
    recovery: tuple[StepVerdict, ...]
    retries: dict[str, int] = field(default_factory=dict)  # error code -> retries taken
    error: str = ""
    guard_injected: bool = False  # the drill's faults include `guard`
    guard_pauses: int = 0  # times a guard (an alarm, injected or real) paused a step
    guard_expected: bool = False  # a step that checks guards ran, so an injected guard should pause it

    @property
    def guard_ok(self) -> bool:
        """An injected guard alarm paused the run, when a guarded step ran to see it."""
        return not (self.guard_injected and self.guard_expected) or self.guard_pauses > 0

    @property
    def detection_ok(self) -> bool:
        """Every detection step the run reached worked (and it reached at least one)."""
        reached = [v for v in self.detection if v.outcome != "not reached"]
        return bool(reached) and all(v.outcome in {"succeeded", "skipped"} for v in reached)

    @property
    def recovery_ok(self) -> bool:
        return all(v.outcome in {"succeeded", "skipped"} for v in self.recovery)

    @property
    def passed(self) -> bool:
        return self.status is Status.SUCCEEDED and self.detection_ok and self.recovery_ok and self.guard_ok

    def summary(self) -> str:
        """One line for the timeline's last event."""
        verdict = "PASSED" if self.passed else "FAILED"
        detected = f"detection {'worked' if self.detection_ok else 'did not work'} ({_count(self.detection)})"
        recovered = (
            f"recovery {'worked' if self.recovery_ok else 'did not work'} ({_count(self.recovery)})"
            if self.recovery
            else "no recovery step reached"
        )
        absorbed = sum(self.retries.values())
        faults = (
            f"{absorbed} retr{'y' if absorbed == 1 else 'ies'} absorbed injected faults ("
            + ", ".join(f"{code} ×{n}" for code, n in sorted(self.retries.items()))
            + ")"
            if absorbed
            else "no retries were needed"
        )
        guard = ""
        if self.guard_pauses:
            times = "once" if self.guard_pauses == 1 else f"{self.guard_pauses} times"
            guard = f"; a guard alarm paused the run {times}"
        elif self.guard_injected and self.guard_expected:
            guard = "; the injected guard alarm never paused the run"
        elif self.guard_injected:
            guard = "; no guarded step ran, so the injected guard alarm was not seen"
        return f"drill {verdict}: {detected}; {recovered}; {faults}{guard}"

    def lines(self) -> list[str]:
        """The console report of `runbook-bot drill`."""
        out = [f"drill {self.execution_id} of {self.runbook}: {self.status.value}", self.summary()]
        for title, verdicts in (("detection", self.detection), ("recovery", self.recovery)):
            for v in verdicts:
                out.append(f"  {title:9} {v.step_id:18} {v.action:28} {v.outcome:12} attempts {v.attempts}")
        if self.error:
            out.append(f"  error: {self.error}")
        return out


def judge(ex: Execution, runbook: Runbook) -> DrillReport:
    def verdicts(kinds: frozenset[str]) -> tuple[StepVerdict, ...]:
        found = []
        for step in runbook.steps:
            if step.action not in kinds:
                continue
            record = ex.steps.get(step.id)
            outcome = record.outcome if record else "not reached"
            found.append(StepVerdict(step.id, step.action, outcome, record.attempts if record else 0))
        return tuple(found)

    retries = Counter(e.error_code or "unknown" for e in ex.timeline if e.kind is EventKind.STEP_RETRY)
    error = f"{ex.error.get('code', '')}: {ex.error.get('message', '')}" if ex.error else ""
    pauses = sum(
        1
        for e in ex.timeline
        if e.kind is EventKind.APPROVAL_REQUESTED and "guard_alarms" in (e.figures or {})
    )
    guarded_ran = any(
        step.action in GUARDED and step.id in ex.steps and ex.steps[step.id].outcome != "skipped"
        for step in (*runbook.steps, *runbook.on_failure)
    ) or any(e.kind is EventKind.STEP_STARTED and _action(runbook, e.step_id) in GUARDED for e in ex.timeline)
    return DrillReport(
        ex.execution_id,
        ex.runbook,
        ex.status,
        verdicts(DETECTION),
        verdicts(RECOVERY),
        dict(retries),
        error,
        guard_injected=float(ex.drill_faults.get("guard", 0) or 0) > 0,
        guard_pauses=pauses,
        guard_expected=guarded_ran,
    )


def _action(runbook: Runbook, step_id: str) -> str:
    try:
        return runbook.step(step_id).action
    except KeyError:
        return ""


def _count(verdicts: tuple[StepVerdict, ...]) -> str:
    ok = sum(1 for v in verdicts if v.outcome in {"succeeded", "skipped"})
    return f"{ok} of {len(verdicts)} steps"
