"""Guard alarms: while a risky step works through its pages, a CloudWatch alarm in ALARM stops it.

A step's `guard_alarms` (and, for a risky step, its partner's) are alarm names or fnmatch
patterns. An action that works in pages calls `guard_tripped(ctx)` between pages, after saving
its cursor: a non-empty answer is why it must pause, and the action hands back a paused outcome
(`StepOutcome.pause`) instead of starting its next page. The run then waits for the approvers to
resume or abort (SSM Automation stops a run on its `AlarmConfiguration` alarms the same way).

The check is one `DescribeAlarms` call per distinct literal prefix of the patterns (StateValue
ALARM, AlarmNamePrefix), on the partner's session: the partner role allows
`cloudwatch:DescribeAlarms` on its alarms. Guards are metric alarms: CloudWatch returns
composite alarms only to a permission on every resource, which the role does not grant.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

from bot.actions.base import Tripped

if TYPE_CHECKING:
    from bot.actions.base import ActionContext

WILDCARDS = "*?["
MAX_PAGES = 5  # per prefix: 500 alarms in ALARM is more than any partner has; more are not read


def guard_pattern_problem(pattern: Any) -> str:
    """Why `pattern` cannot name guard alarms ("" when it can)."""
    if not isinstance(pattern, str) or not pattern.strip():
        return f"guard alarm `{pattern}` must be a CloudWatch alarm name or an fnmatch pattern such as acme-*-latency"
    if len(pattern) > 255:
        return f"guard alarm `{pattern[:40]}…` is longer than a CloudWatch alarm name may be (255 characters)"
    if any(ord(c) < 32 or ord(c) == 127 for c in pattern):
        return f"guard alarm {pattern!r} contains control characters, which no CloudWatch alarm name has"
    if not pattern.strip(WILDCARDS + "]!"):
        return (
            f"guard alarm `{pattern}` matches every alarm in the account; name the partner's alarms "
            "(e.g. acme-*-latency)"
        )
    return ""


def literal_prefix(pattern: str) -> str:
    """The part of `pattern` before its first wildcard: DescribeAlarms' AlarmNamePrefix."""
    for i, char in enumerate(pattern):
        if char in WILDCARDS:
            return pattern[:i]
    return pattern


def guard_tripped(ctx: ActionContext) -> Tripped | None:
    """Why the step must pause now (None when it may go on): a guard alarm in ALARM that the
    approvers have not resumed over, a pause the alarm handler asked for, or guard alarms that
    cannot be read (a guarded step does not run blind)."""
    requested = ctx.pause_requested()
    if requested is not None:
        return requested
    if not ctx.guard_alarms:
        return None
    try:
        firing = alarms_in_alarm(ctx, ctx.guard_alarms)
    except Exception as error:  # any failure to read the guard pauses the step
        return Tripped(
            f"its guard alarms could not be read ({type(error).__name__}: {error}); check them before resuming"
        )
    new = [(name, reason) for name, reason in firing if name not in ctx.guard_accepted]
    if not new:
        return None
    name, reason = new[0]
    more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
    why = f"guard alarm {name} is in ALARM{more}" + (f": {reason}" if reason else "")
    return Tripped(why, tuple(n for n, _ in firing))


def alarms_in_alarm(ctx: ActionContext, patterns: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, state reason) of every alarm in ALARM that one of `patterns` matches, by name."""
    client = ctx.aws.client("cloudwatch")
    prefixes = sorted({literal_prefix(p) for p in patterns})
    if "" in prefixes:
        prefixes = [""]
    elif len(prefixes) > 1:
        # A prefix that starts another covers it: one call fewer.
        prefixes = [p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes)]
    found: dict[str, str] = {}
    for prefix in prefixes:
        # Metric alarms only: composite ones need DescribeAlarms on every resource ("*").
        request: dict[str, Any] = {"StateValue": "ALARM", "MaxRecords": 100}
        if prefix:
            request["AlarmNamePrefix"] = prefix
        for _ in range(MAX_PAGES):
            page = client.describe_alarms(**request)
            for alarm in page.get("MetricAlarms", ()):
                name = str(alarm.get("AlarmName", ""))
                if alarm.get("StateValue", "ALARM") == "ALARM" and any(
                    fnmatch.fnmatchcase(name, p) for p in patterns
                ):
                    found[name] = str(alarm.get("StateReason", ""))
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
    return sorted(found.items())
