"""A partner: whose DynamoDB traffic we protect, where it lives, and who decides risky steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    drill_target: dict[str, str] = field(default_factory=dict)  # table alias -> drill table name
    drill_faults: str = "throttle=0.2,timeout=0.02"  # faults a drill injects unless told otherwise
    drill_time_limit_seconds: int = 600
    source: str = ""

    def table(self, alias: str) -> PartnerTable:
        try:
            return self.tables[alias]
        except KeyError:
            known = ", ".join(sorted(self.tables)) or "none"
            raise KeyError(f"partner {self.name} has no table {alias!r} (tables: {known})") from None

    def may_run_in(self, channel_id: str) -> bool:
        return not self.channels or channel_id in self.channels
