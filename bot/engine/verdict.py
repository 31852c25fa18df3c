"""Did the drill's detection and recovery work? A pure judgement over the finished execution.

Detection steps read and judge (describe, metrics, hot keys, queries, consistency, preflight);
recovery steps change something (replays, capacity). A drill passes when every detection and
recovery step it reached succeeded and the run ended SUCCEEDED; injected faults that retries
absorbed are listed, since absorbing them is what the drill rehearses.
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
        return self.status is Status.SUCCEEDED and self.detection_ok and self.recovery_ok

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
        return f"drill {verdict}: {detected}; {recovered}; {faults}"

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
    return DrillReport(
        ex.execution_id, ex.runbook, ex.status, verdicts(DETECTION), verdicts(RECOVERY), dict(retries), error
    )


def _count(verdicts: tuple[StepVerdict, ...]) -> str:
    ok = sum(1 for v in verdicts if v.outcome in {"succeeded", "skipped"})
    return f"{ok} of {len(verdicts)} steps"
