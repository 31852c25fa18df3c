"""A partner: whose DynamoDB traffic we protect, where it lives, and who decides risky steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bot.exceptions import RunbookBotError

DRILL_STORE = "failed_requests"  # the drill_target key of the failed-request store
RISK_LEVELS = ("high", "critical")  # the levels a partner's `approvals` quorum is set for
MAX_QUORUM = 10  # as many approvers as SSM Automation's `Approvers` list may name


class DrillTargetMissing(RunbookBotError):
    """A drill would touch a partner resource that has no drill target; nothing was started."""


@dataclass(frozen=True)
class KeyAttribute:
    name: str
    type: str  # S | N | B


@dataclass(frozen=True)
class PartnerIndex:
    name: str
    partition_key: KeyAttribute
    sort_key: KeyAttribute | None = None


@dataclass(frozen=True)
class PartnerTable:
    """A partner table, by its alias in runbooks (`partner.tables.orders.name`)."""

    alias: str
    name: str
    partition_key: KeyAttribute
    sort_key: KeyAttribute | None = None
    indexes: tuple[PartnerIndex, ...] = ()


@dataclass(frozen=True)
class FailedRequestStore:
    kind: str  # "table" | "sqs"
    name: str  # table name or queue name
    target_table: str = ""  # alias of the table the missed writes belong to


@dataclass(frozen=True)
class CapacityLimits:
    max_read_units: int = 0
    max_write_units: int = 0
    allow_on_demand: bool = True
    replay_budget_share: float = 0.5  # share of provisioned/observed WCU a replay may use


@dataclass(frozen=True)
class AlarmMapping:
    pattern: str  # fnmatch pattern on the CloudWatch alarm name
    runbook: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sla:
    response_minutes: int
    resolution_minutes: int
    warn_at: float = 0.8  # share of the resolution window after which the timeline warns


@dataclass(frozen=True)
class Partner:
    name: str
    display_name: str
    region: str
    account_id: str
    role_arn: str  # assumed through STS; empty means the bot's own credentials (local, demo)
    sla: Sla
    channels: tuple[str, ...]  # channel ids that may run this partner's runbooks; empty = any
    approvers: tuple[str, ...]  # Slack user ids (U…/W…) or user-group ids (S…)
    tables: dict[str, PartnerTable]
    failed_requests: FailedRequestStore | None = None
    capacity: CapacityLimits = field(default_factory=CapacityLimits)
    alarms: tuple[AlarmMapping, ...] = ()
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # runbook -> param -> value
    approval_timeout_minutes: int = 30
    approvals: dict[str, int] = field(default_factory=dict)  # risk level -> distinct approvers needed
    # CloudWatch alarm names or fnmatch patterns guarding every risky step (SSM: AlarmConfiguration)
    guard_alarms: tuple[str, ...] = ()
    # table alias -> drill table; "failed_requests" -> the drill's failed-request store
    drill_target: dict[str, str] = field(default_factory=dict)
    drill_faults: str = "throttle=0.2,timeout=0.02"  # faults a drill injects unless told otherwise
    drill_time_limit_seconds: int = 600
    source: str = ""

    def table(self, alias: str) -> PartnerTable:
        try:
            return self.tables[alias]
        except KeyError:
            known = ", ".join(sorted(self.tables)) or "none"
            raise KeyError(f"partner {self.name} has no table {alias!r} (tables: {known})") from None

    def quorum(self) -> dict[str, int]:
        """Distinct approvers each risk level needs: 1 for `high` unless set, and `critical` as
        many as `high` unless set (a partner that asks for two approvers asks for two everywhere)."""
        high = int(self.approvals.get("high", 1))
        return {"high": high, "critical": int(self.approvals.get("critical", high))}

    def may_run_in(self, channel_id: str) -> bool:
        return not self.channels or channel_id in self.channels

    def production_resources(self) -> frozenset[str]:
        """Names of every production table and store: what a drill must never touch."""
        names = {t.name for t in self.tables.values()}
        if self.failed_requests:
            names.add(self.failed_requests.name)
        return frozenset(names)

    def drill_gaps(self) -> list[str]:
        """What a drill would touch that has no drill target (empty: the partner can be drilled)."""
        gaps = [
            f"table alias `{alias}` ({table.name})"
            for alias, table in self.tables.items()
            if not self.drill_target.get(alias)
        ]
        if self.failed_requests and not self.drill_target.get(DRILL_STORE):
            gaps.append(f"the failed-request store `{DRILL_STORE}` ({self.failed_requests.name})")
        return gaps

    def for_drill(self) -> Partner:
        """This partner as a drill sees it: every table and the failed-request store replaced by
        its drill target, so nothing a step names can resolve to production.

        Raises DrillTargetMissing, naming each gap, when anything lacks a drill target.
        """
        gaps = self.drill_gaps()
        if gaps:
            example = ", ".join(f"{alias}: {table.name}-drill" for alias, table in self.tables.items()) + (
                f", {DRILL_STORE}: {self.failed_requests.name}-drill" if self.failed_requests else ""
            )
            raise DrillTargetMissing(
                f"{self.name} cannot be drilled: no drill target for {', '.join(gaps)}. Add them to "
                f"drill_target in its partner file, e.g. `drill_target: {{{example}}}`"
            )
        tables = {
            alias: dataclasses.replace(table, name=self.drill_target[alias])
            for alias, table in self.tables.items()
        }
        store = (
            dataclasses.replace(self.failed_requests, name=self.drill_target[DRILL_STORE])
            if self.failed_requests
            else None
        )
        return dataclasses.replace(self, tables=tables, failed_requests=store)
