"""What `/runbook` does with each command: parse → decide → persist → answer.

Every answer is a `Message` for the requester. Bad input never raises past here: it becomes an
answer that says what was wrong and what is valid, and nothing is started or written.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.exceptions import CommandError, RunbookBotError
from bot.partners.model import DrillTargetMissing
from bot.slack import grammar, render
from bot.store.model import Execution
from bot.text import escape

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.engine.model import Runbook
    from bot.partners.model import Partner
    from bot.slack.history import Asker, HistoryService
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
    response_url: str = ""

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Invocation:
        return cls(
            text=str(payload.get("text") or ""),
            user_id=str(payload.get("user_id") or ""),
            channel_id=str(payload.get("channel_id") or ""),
            team_id=str(payload.get("team_id") or ""),
            trigger_id=str(payload.get("trigger_id") or ""),
            response_url=str(payload.get("response_url") or ""),
        )


class CommandService:
    def __init__(
        self,
        store: ExecutionStore,
        catalog: Callable[[], Catalog],
        now_ms: Callable[[], int],
        members_of: Callable[[str], frozenset[str]] | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.now_ms = now_ms
        # Members of a Slack user group (approvers named S…); the app gives a cached, time-boxed one.
        self.members_of = members_of or (lambda group: frozenset())

    def answer(self, inv: Invocation) -> render.Message:
        try:
            command = grammar.parse(inv.text)
            return self._dispatch(command, inv)
        except CommandError as error:
            return render.refusal(str(error))

    def _dispatch(self, command: grammar.Command, inv: Invocation) -> render.Message:
        catalog = self.catalog()
        match command:
            case grammar.StartForm():  # the app opens the form; without a trigger_id, the help
                return render.help_text(None, catalog.runbooks)
            case grammar.StartRun():
                return self._start(command.runbook, command.partner, command.params, inv, drill=False)
            case grammar.Drill():
                return self._start(command.runbook, command.partner, command.params, inv, drill=True)
            case grammar.PlanRun():
                return self._plan(command.runbook, command.partner, command.params, inv)
            case grammar.ListCommand():
                return render.run_list(catalog.runbooks, catalog.partners, inv.channel_id)
            case grammar.Help():
                runbook = self._runbook(command.runbook) if command.runbook else None
                return render.help_text(runbook, catalog.runbooks)
            case grammar.Status():
                ex = self._visible_execution(command.execution_id, inv)
                return render.status_text(ex, self._runbook(ex.runbook), self._display(ex.partner))
            case grammar.Timeline():
                ex = self._visible_execution(command.execution_id, inv)
                return render.timeline_text(ex, catalog.runbooks.get(ex.runbook), self._display(ex.partner))
            case grammar.Cancel():
                return self._cancel(command.execution_id, inv)
            case grammar.Errors():
                return render.errors_text(catalog.errors, command.code)
            case grammar.History():
                return self.history().answer(command, _asker(inv))
            case grammar.Export():
                return self.export(command.execution_id, inv)
            case grammar.Retry():
                return self._retry(command, inv)
        raise CommandError(f"`{inv.text}` is not a command I know; try `/runbook help`")

    # -- starting a run --------------------------------------------------------------------

    def _start(
        self, runbook_name: str, partner_name: str, given: dict[str, str], inv: Invocation, *, drill: bool
    ) -> render.Message:
        from bot.engine.params import bind_parameters
        from bot.engine.starts import new_execution, run_locks

        runbook = self._runbook(runbook_name)
        partner = self._partner(partner_name)
        if not partner.may_run_in(inv.channel_id):
            channels = ", ".join(f"<#{c}>" for c in partner.channels)
            raise CommandError(f"{partner.display_name}'s runbooks run in {channels}; start it there")
        if drill:
            try:
                partner.for_drill()
            except DrillTargetMissing as error:
                raise CommandError(str(error)) from None
        force = _force(given)
        drill_settings = _drill_settings(partner, given) if drill else {}
        reserved = (DRILL_KEYS if drill else set()) | {FORCE_KEY}
        params = bind_parameters(runbook, partner, {k: v for k, v in given.items() if k not in reserved})
        locks = run_locks(runbook, partner, params, drill=drill)
        execution_id = grammar.new_execution_id(f"{inv.team_id}:{inv.trigger_id or inv.text}:{inv.user_id}")
        holder = next((h for h in map(self.store.lock_holder, locks) if h and h != execution_id), None)
        if holder and not force:
            raise CommandError(
                f"`{holder}` is already running on a table this run would change; two runs never change "
                f"one table at once. Follow it with `/runbook status {holder}`, cancel it with "
                f"`/runbook cancel {holder}`, or (approvers only) add `force=true` to start anyway"
            )
        if force and not self._is_approver(inv.user_id, partner):
            raise CommandError(
                f"only {partner.display_name}'s approvers may use force=true: "
                + ", ".join(f"<!subteam^{a}>" if a.startswith("S") else f"<@{a}>" for a in partner.approvers)
            )
        ex = new_execution(
            execution_id,
            runbook,
            partner,
            params,
            requested_by=inv.user_id,
            channel=inv.channel_id,
            now_ms=self.now_ms(),
            trigger="drill" if drill else "slash",
            drill=drill,
            forced_over=holder or "",
            response_url=inv.response_url,
            **drill_settings,
        )
        held = self.store.create_locked(ex, locks, force=force)
        if held == ex.execution_id:
            logger.info("redelivered start request", extra={"execution_id": ex.execution_id})
        elif held:  # another start took the lock between our look and our write
            raise CommandError(
                f"`{held}` has just started on a table this run would change; follow it with "
                f"`/runbook status {held}`"
            )
        return render.started(ex, unreachable=self.store.channel_unreachable(inv.channel_id))

    def _plan(
        self, runbook_name: str, partner_name: str, given: dict[str, str], inv: Invocation
    ) -> render.Message:
        """A plan: the same channel and parameter rules as a run; no lock, no approval."""
        from bot.engine.params import bind_parameters
        from bot.engine.planner import PLAN
        from bot.engine.starts import new_execution
        from bot.slack.plan_render import planning

        runbook = self._runbook(runbook_name)
        partner = self._partner(partner_name)
        if not partner.may_run_in(inv.channel_id):
            channels = ", ".join(f"<#{c}>" for c in partner.channels)
            raise CommandError(
                f"{partner.display_name}'s runbooks run and are planned in {channels}; plan it there"
            )
        if FORCE_KEY in given:
            raise CommandError(
                "force= does not apply to a plan: a plan takes no lock. Give force=true to the run, "
                "if an approver must start it past another run's lock"
            )
        params = bind_parameters(runbook, partner, given)
        execution_id = grammar.new_execution_id(
            f"plan:{inv.team_id}:{inv.trigger_id or inv.text}:{inv.user_id}"
        )
        ex = new_execution(
            execution_id,
            runbook,
            partner,
            params,
            requested_by=inv.user_id,
            channel=inv.channel_id,
            now_ms=self.now_ms(),
            trigger="slash",
            response_url=inv.response_url,
            kind=PLAN,
        )
        # A plan resolves nothing: no SLA clock runs on it (status shows none, no warning is posted).
        ex = dataclasses.replace(ex, sla_response_minutes=0, sla_resolution_minutes=0)
        if not self.store.create(ex):
            logger.info("redelivered plan request", extra={"execution_id": ex.execution_id})
        return planning(ex, unreachable=self.store.channel_unreachable(inv.channel_id))

    def _cancel(self, execution_id: str, inv: Invocation) -> render.Message:
        ex = self._visible_execution(execution_id, inv)
        partner = self._partner(ex.partner)
        if inv.user_id != ex.requested_by and not self._is_approver(inv.user_id, partner):
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

    # -- history and evidence files (bot/slack/history.py, bot/slack/evidence.py) ---------------

    def history(self) -> HistoryService:
        from bot.slack.history import HistoryService
        from bot.store.history import HistoryStore

        return HistoryService(
            HistoryStore(self.store.client, self.store.table), self.catalog, self.now_ms, self._is_approver
        )

    def more_history(self, value: str, user_id: str, channel_id: str) -> render.Message:
        """A click on *More*: the next page, if the clicker may still see it here."""
        try:
            return self.history().more(value, _asker(Invocation("", user_id, channel_id, "", "")))
        except CommandError as error:
            return render.refusal(str(error))

    def export(self, execution_id: str, inv: Invocation) -> render.Message:
        """Ask for the run's evidence file: a small item whose stream record makes the timeline
        consumer upload it to the run's thread. Nothing is uploaded here (this is the ack path)."""
        from bot.store.exports import UPLOADING, ExportRequest, ExportStore

        ex = self._visible_execution(execution_id, inv)
        asked = ExportRequest(execution_id, inv.user_id, self.now_ms(), inv.channel_id, inv.response_url)
        standing = ExportStore(self.store.client, self.store.table).request(asked)
        if standing is None:
            return render.refusal(
                f"Exporting `{ex.execution_id}`: its evidence file (Markdown and JSON) appears in the run's thread "
                "in a few seconds."
            )
        doing = "is being uploaded" if standing.status == UPLOADING else "was asked for"
        return render.refusal(
            f"The evidence file of `{ex.execution_id}` {doing} by <@{standing.requested_by}> "
            f"{render.date_token(standing.requested_at_ms, '{time_secs}')}; look in the run's thread. "
            "Ask again after a minute for a fresh one."
        )

    def export_click(
        self, execution_id: str, user_id: str, channel_id: str, response_url: str
    ) -> render.Message:
        """A click on *Export evidence*: the same request as the command, rights checked again."""
        try:
            return self.export(
                grammar.execution_id(execution_id), Invocation("", user_id, channel_id, "", "", response_url)
            )
        except CommandError as error:
            return render.refusal(str(error))

    def _retry(self, command: grammar.Retry, inv: Invocation) -> render.Message:
        from bot.slack.retry import resume_run, unknown_text

        ex = self.store.get(command.execution_id)  # consistent: its status decides what happens
        if ex is None:
            raise CommandError(unknown_text(command.execution_id))
        self._check_visible(ex, inv)
        partner = self._partner(ex.partner)
        if inv.user_id != ex.requested_by and not self._is_approver(inv.user_id, partner):
            raise CommandError(
                f"only the requester {render.mention(ex.requested_by)} or {partner.display_name}'s approvers "
                f"may retry {ex.execution_id}"
            )
        runbook = self._runbook(ex.runbook)
        return resume_run(
            self.store, ex, runbook, partner, inv.user_id, confirm=command.confirm, now_ms=self.now_ms()
        )

    # -- who may see and do what -------------------------------------------------------------

    def _is_approver(self, user_id: str, partner: Partner) -> bool:
        from bot.slack.approvals import is_approver

        return is_approver(user_id, partner, self.members_of)

    def _visible_execution(self, execution_id: str, inv: Invocation) -> Execution:
        """A run, for someone who may see it: in the partner's channels, or in a DM (or any other
        channel) only to its requester and the partner's approvers."""
        return self._check_visible(self._execution(execution_id), inv)

    def _check_visible(self, ex: Execution, inv: Invocation) -> Execution:
        execution_id = ex.execution_id
        partner = self.catalog().partners.get(ex.partner)
        if partner is None or (partner.channels and inv.channel_id in partner.channels):
            return ex
        if not partner.channels and inv.channel_id == ex.channel:
            return ex
        if inv.channel_id.startswith("D") and (
            inv.user_id == ex.requested_by or self._is_approver(inv.user_id, partner)
        ):
            return ex
        where = ", ".join(f"<#{c}>" for c in partner.channels or (ex.channel,))
        raise CommandError(
            f"{execution_id} belongs to {partner.display_name}; ask in {where} (or, as its requester or "
            "an approver, in a direct message with Runbook Bot)"
        )

    # -- lookups with answers people can act on ---------------------------------------------

    def _runbook(self, name: str) -> Runbook:
        runbooks = self.catalog().runbooks
        if name not in runbooks:
            raise CommandError(
                f"no runbook named `{name}`{_did_you_mean(name, runbooks)}; runbooks: {', '.join(sorted(runbooks))}"
            )
        return runbooks[name]

    def _partner(self, name: str) -> Partner:
        partners = self.catalog().partners
        if name not in partners:
            raise CommandError(
                f"no partner named `{name}`{_did_you_mean(name, partners)}; partners: {', '.join(sorted(partners))}"
            )
        return partners[name]

    def _display(self, partner_name: str) -> str:
        partner = self.catalog().partners.get(partner_name)
        return partner.display_name if partner else partner_name

    def _execution(self, execution_id: str) -> Execution:
        ex = self.store.get(execution_id, consistent=False)
        if ex is None:
            raise CommandError(
                f"no execution `{execution_id}`; execution ids look like rb-xxxxxxxxxx and are named in the "
                "answer to the command that started the run and in its channel message"
            )
        return ex


FORCE_KEY = "force"


def _asker(inv: Invocation) -> Asker:
    from bot.slack.history import Asker

    return Asker(inv.user_id, inv.channel_id)


def _did_you_mean(name: str, known: Any) -> str:
    """`; did you mean `throttle`?` for a name one or two edits away, as git does."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _force(given: dict[str, str]) -> bool:
    raw = given.get(FORCE_KEY)
    if raw is None:
        return False
    if raw.lower() not in {"true", "yes", "1"}:
        raise CommandError(f"force={escape(raw)}: write force=true (approvers only) or leave it out")
    return True


DRILL_KEYS = {"faults", "for"}


def _drill_settings(partner: Partner, given: dict[str, str]) -> dict[str, Any]:
    """A drill's faults and time limit: `faults=` and `for=` on the command, else the partner's."""
    from bot.engine.durations import parse_duration
    from bot.partners.faults import FaultSpec

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


# -- the start form (bot/slack/start_form.py) ------------------------------------------------------


@dataclass(frozen=True)
class FormAnswer:
    """A submitted start form: `errors` (block id -> message, shown under the fields; nothing
    started), or the run started (`started`, the same answer the command gives)."""

    errors: dict[str, str]
    started: render.Message | None = None
    channel: str = ""


def _home_start_refusal(commands: CommandService, user_id: str, partner: Partner) -> str:
    """Why `user_id` may not start a run of `partner` from the App Home ('' when they may)."""
    where = ", ".join(f"#{c}" for c in partner.channels)
    try:
        if commands._is_approver(user_id, partner):
            return ""
    except RunbookBotError as unknown:  # MembershipUnknown: a user group not read in time
        return _plain(str(unknown))
    return (
        f"From the Home, only {partner.display_name}'s approvers start runs. "
        f"Anyone in {where} can: type /runbook there."
    )


def start_from_form(
    commands: CommandService, view: dict[str, Any], user_id: str, team_id: str, trigger_id: str
) -> FormAnswer:
    """The form's submission, checked as the command is: the channel it was opened from must be
    one the partner may run in, the parameters are bound by bind_parameters (each problem under
    its field), and the run starts through the command's own path (locks, execution id)."""
    from bot.engine.params import check_parameters
    from bot.slack.start_form import PARTNER_BLOCK, RUNBOOK_BLOCK, param_prefix, read_form, run_channel

    filled = read_form(view)
    choice = filled.choice
    catalog = commands.catalog()
    runbook = catalog.runbooks.get(choice.runbook)
    if runbook is None:
        return FormAnswer({RUNBOOK_BLOCK: "Pick a runbook from the list."})
    partner = catalog.partners.get(choice.partner)
    if partner is None:
        shown = PARTNER_BLOCK in ((view.get("state") or {}).get("values") or {})
        return FormAnswer({PARTNER_BLOCK if shown else RUNBOOK_BLOCK: "Pick a partner from the list."})
    channel = run_channel(partner, choice)
    if not channel:
        if choice.from_home:
            return FormAnswer(
                {
                    PARTNER_BLOCK: f"{partner.display_name} has no channel of its own; type /runbook in the "
                    "channel where its run should go."
                }
            )
        return FormAnswer(
            {RUNBOOK_BLOCK: "This form does not say which channel it belongs to; open it again."}
        )
    if choice.from_home:
        # In a channel, Slack lets only its members type the command; the Home has no channel to
        # prove the user belongs to the partner's, so only the partner's approvers start from it.
        refused = _home_start_refusal(commands, user_id, partner)
        if refused:
            return FormAnswer({PARTNER_BLOCK: refused})
    if not partner.may_run_in(channel):
        where = ", ".join(f"#{c}" for c in partner.channels)
        return FormAnswer(
            {PARTNER_BLOCK: f"{partner.display_name}'s runbooks run in {where}; start it there."}
        )
    _, problems = check_parameters(runbook, partner, filled.given)
    if problems:
        prefix = param_prefix(runbook.name, partner.name)
        errors: dict[str, str] = {}
        for name, message in problems:
            errors.setdefault(prefix + name, _plain(message))
        return FormAnswer(errors)
    inv = Invocation("", user_id, channel, team_id, trigger_id)
    try:
        if filled.plan:
            started = commands._plan(runbook.name, partner.name, filled.given, inv)
        else:
            started = commands._start(runbook.name, partner.name, filled.given, inv, drill=False)
    except CommandError as error:  # e.g. a run holds the table's lock: said under the partner
        said = str(error).replace(
            "add `force=true` to start anyway",
            f"type `/runbook {runbook.name} {partner.name} force=true` to start anyway (the form never forces)",
        )
        return FormAnswer({PARTNER_BLOCK: _plain(said)})
    return FormAnswer({}, started, channel)


def _plain(message: str) -> str:
    """A message for under a form field (plain text there): no backticks, markup unescaped."""
    return message.replace("`", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")[:1000]
