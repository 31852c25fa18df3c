"""What `/runbook` does with each command: parse → decide → persist → answer.

Every answer is a `Message` for the requester. Bad input never raises past here: it becomes an
answer that says what was wrong and what is valid, and nothing is started or written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.engine import machine
from bot.exceptions import CommandError, RunbookBotError
from bot.slack import grammar, render
from bot.store.model import Execution, Status

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.engine.model import Runbook
    from bot.partners.model import Partner
    from bot.store.executions import ExecutionStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Invocation:
    """The parts of Slack's slash-command payload that we use."""

    text: str
    user_id: str
    channel_id: str
    team_id: str
    trigger_id: str

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Invocation:
        return cls(
            text=str(payload.get("text") or ""),
            user_id=str(payload.get("user_id") or ""),
            channel_id=str(payload.get("channel_id") or ""),
            team_id=str(payload.get("team_id") or ""),
            trigger_id=str(payload.get("trigger_id") or ""),
        )


class CommandService:
    def __init__(
        self, store: ExecutionStore, catalog: Callable[[], Catalog], now_ms: Callable[[], int]
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.now_ms = now_ms

    def answer(self, inv: Invocation) -> render.Message:
        try:
            command = grammar.parse(inv.text)
            return self._dispatch(command, inv)
        except CommandError as error:
            return render.refusal(str(error))

    def _dispatch(self, command: grammar.Command, inv: Invocation) -> render.Message:
        catalog = self.catalog()
        match command:
            case grammar.StartRun():
                return self._start(command.runbook, command.partner, command.params, inv, drill=False)
            case grammar.Drill():
                return self._start(command.runbook, command.partner, command.params, inv, drill=True)
            case grammar.ListCommand():
                return render.run_list(catalog.runbooks, catalog.partners, inv.channel_id)
            case grammar.Help():
                runbook = self._runbook(command.runbook) if command.runbook else None
                return render.help_text(runbook, catalog.runbooks)
            case grammar.Status():
                ex = self._execution(command.execution_id)
                return render.status_text(ex, self._runbook(ex.runbook))
            case grammar.Timeline():
                return render.timeline_text(self._execution(command.execution_id))
            case grammar.Cancel():
                return self._cancel(command.execution_id, inv)
            case grammar.Errors():
                return render.errors_text(catalog.errors, command.code)
        raise CommandError(f"`{inv.text}` is not a command I know; try `/runbook help`")

    # -- starting a run --------------------------------------------------------------------

    def _start(
        self, runbook_name: str, partner_name: str, given: dict[str, str], inv: Invocation, *, drill: bool
    ) -> render.Message:
        from bot.engine.params import bind_parameters

        runbook = self._runbook(runbook_name)
        partner = self._partner(partner_name)
        if not partner.may_run_in(inv.channel_id):
            channels = ", ".join(f"<#{c}>" for c in partner.channels)
            raise CommandError(f"{partner.name}'s runbooks run in {channels}; start it there")
        if drill and not partner.drill_target:
            raise CommandError(
                f"{partner.name} has no drill_target in its partner file, so it cannot be drilled"
            )
        drill_settings = _drill_settings(partner, given) if drill else {}
        params = bind_parameters(
            runbook, partner, {k: v for k, v in given.items() if not drill or k not in DRILL_KEYS}
        )
        ex = new_execution(
            grammar.new_execution_id(f"{inv.team_id}:{inv.trigger_id or inv.text}:{inv.user_id}"),
            runbook,
            partner,
            params,
            requested_by=inv.user_id,
            channel=inv.channel_id,
            now_ms=self.now_ms(),
            trigger="drill" if drill else "slash",
            drill=drill,
            **drill_settings,
        )
        if not self.store.create(ex):
            logger.info("redelivered start request", extra={"execution_id": ex.execution_id})
        return render.started(ex.execution_id, runbook.name, partner.name)

    def _cancel(self, execution_id: str, inv: Invocation) -> render.Message:
        ex = self._execution(execution_id)
        partner = self._partner(ex.partner)
        if inv.user_id != ex.requested_by and inv.user_id not in partner.approvers:
            raise CommandError(
                f"only the requester <@{ex.requested_by}> or {partner.display_name}'s approvers may cancel "
                f"{execution_id}"
            )
        if ex.status.terminal:
            raise CommandError(f"{execution_id} already ended {ex.status.value}; nothing to cancel")
        if self.store.request_cancel(execution_id, inv.user_id) is None:
            raise CommandError(f"{execution_id} is already being cancelled or has just ended")
        return render.refusal(
            f"Cancelling {execution_id}: it stops at its next step boundary (a step in flight finishes first)."
        )

    # -- lookups with answers people can act on ---------------------------------------------

    def _runbook(self, name: str) -> Runbook:
        runbooks = self.catalog().runbooks
        if name not in runbooks:
            raise CommandError(f"no runbook named `{name}`; runbooks: {', '.join(sorted(runbooks))}")
        return runbooks[name]

    def _partner(self, name: str) -> Partner:
        partners = self.catalog().partners
        if name not in partners:
            raise CommandError(f"no partner named `{name}`; partners: {', '.join(sorted(partners))}")
        return partners[name]

    def _execution(self, execution_id: str) -> Execution:
        ex = self.store.get(execution_id, consistent=False)
        if ex is None:
            raise CommandError(
                f"no execution `{execution_id}`; execution ids look like rb-xxxxxxxxxx and are named in the "
                "answer to the command that started the run and in its channel message"
            )
        return ex


DRILL_KEYS = {"faults", "for"}


def _drill_settings(partner: Partner, given: dict[str, str]) -> dict[str, Any]:
    """A drill's faults and time limit: `faults=` and `for=` on the command, else the partner's."""
    from bot.drills.faults import FaultSpec
    from bot.engine.durations import parse_duration

    try:
        faults = FaultSpec.parse(given.get("faults", partner.drill_faults))
    except RunbookBotError as error:
        raise CommandError(f"faults={given.get('faults')}: {error}") from None
    try:
        seconds = parse_duration(given["for"]) if "for" in given else partner.drill_time_limit_seconds
    except ValueError as error:
        raise CommandError(f"for={given['for']}: {error}") from None
    if not 0 < seconds <= 6 * 3600:
        raise CommandError(f"for={given.get('for')}: a drill may run from 1s to 6h")
    return {"drill_faults": faults.as_dict(), "drill_seconds": seconds}


def new_execution(
    execution_id: str,
    runbook: Runbook,
    partner: Partner,
    params: dict[str, Any],
    *,
    requested_by: str,
    channel: str,
    now_ms: int,
    trigger: str,
    drill: bool = False,
    drill_faults: dict[str, float] | None = None,
    drill_seconds: int = 0,
) -> Execution:
    """A run as it is first written: PENDING at version 0, its first step at the cursor."""
    return Execution(
        execution_id=execution_id,
        runbook=runbook.name,
        runbook_version=runbook.version,
        partner=partner.name,
        status=Status.PENDING,
        version=0,
        params=params,
        requested_by=requested_by,
        channel=channel,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
        trigger=trigger,
        drill=drill,
        drill_faults=dict(drill_faults or {}),
        drill_until_ms=now_ms + drill_seconds * 1000 if drill and drill_seconds else None,
        cursor=runbook.steps[0].id if runbook.steps else None,
        total_steps=len(runbook.steps),
        sla_response_minutes=partner.sla.response_minutes,
        sla_resolution_minutes=partner.sla.resolution_minutes,
        sla_warn_at=partner.sla.warn_at,
        approval_timeout_minutes=partner.approval_timeout_minutes,
        # If no worker picks the run up (a lost record), the sweeper wakes it after the grace period.
        due_at_ms=now_ms + machine.GRACE_MS,
        due_reason="stuck",
    )
