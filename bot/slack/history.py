"""`/runbook history` and its *More* button: who may see which runs, and how a page reads.

Need-to-know as for `status`: in a partner's channels, its runs; for a partner without channels,
the runs started in this channel; in a DM, all of a partner's runs to its approvers and one's
own runs to anyone else. The *More* button carries the filter and the cursor; a click checks the
clicker's rights again, so a forwarded or replayed value shows nothing more than its clicker may see.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.engine.durations import format_duration
from bot.exceptions import CommandError
from bot.slack.grammar import NAME, History
from bot.slack.render import STATUS_EMOJI, Message, context, date_token, mention, section
from bot.store.history import BadCursor, HistoryFilter, HistoryPage, HistoryStore
from bot.store.model import Status
from bot.text import escape

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.partners.model import Partner

PAGE_SIZE = 10
MORE_ACTION = "history_more"
MAX_VALUE = 2000  # Slack's limit on a button's value


@dataclass(frozen=True)
class Asker:
    user_id: str
    channel_id: str


class HistoryService:
    def __init__(
        self,
        store: HistoryStore,
        catalog: Callable[[], Catalog],
        now_ms: Callable[[], int],
        is_approver: Callable[[str, Partner], bool],
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.now_ms = now_ms
        self.is_approver = is_approver

    def answer(self, command: History, asker: Asker) -> Message:
        """The first page for `/runbook history ...`; CommandError says what is wrong."""
        partner, runbook = self._names(command, asker)
        wanted = self._scoped(
            HistoryFilter(
                partner=partner.name,
                since_ms=self.now_ms() - command.since_seconds * 1000,
                runbook=runbook,
                statuses=command.statuses,
            ),
            partner,
            asker,
        )
        return self._page(wanted, partner, "")

    def more(self, value: str, asker: Asker) -> Message:
        """The next page, for a click on *More*: the value is checked like typed input."""
        try:
            given = json.loads(value)
            partner_name, runbook, statuses, since_ms, cursor = (
                given["p"],
                given.get("r"),
                frozenset(Status(s) for s in given.get("s") or ()),
                int(given["t"]),
                str(given["c"]),
            )
        except (ValueError, KeyError, TypeError):
            raise CommandError(
                "that *More* button is not one Runbook Bot made; run `/runbook history` again"
            ) from None
        partner = self.catalog().partners.get(str(partner_name))
        if partner is None or (runbook is not None and not NAME.fullmatch(str(runbook))):
            raise CommandError(
                "that *More* button names nothing this deployment has; run `/runbook history` again"
            )
        wanted = self._scoped(HistoryFilter(partner.name, since_ms, runbook, statuses), partner, asker)
        return self._page(wanted, partner, cursor)

    # -- who may see what ------------------------------------------------------------------

    def _names(self, command: History, asker: Asker) -> tuple[Partner, str | None]:
        catalog = self.catalog()
        partner_name, runbook = command.partner, command.runbook
        for name in command.names:
            if name in catalog.partners and partner_name is None:
                partner_name = name
            elif name in catalog.runbooks and runbook is None:
                runbook = name
            else:
                known = sorted({*catalog.partners, *catalog.runbooks})
                raise CommandError(
                    f"`{name}` is neither a partner nor a runbook{_did_you_mean(name, known)}; "
                    f"partners: {', '.join(sorted(catalog.partners))}; runbooks: {', '.join(sorted(catalog.runbooks))}"
                )
        if runbook is not None and runbook not in catalog.runbooks:
            raise CommandError(
                f"no runbook named `{runbook}`{_did_you_mean(runbook, catalog.runbooks)}; "
                f"runbooks: {', '.join(sorted(catalog.runbooks))}"
            )
        if partner_name is None:
            here = [p for p in catalog.partners.values() if asker.channel_id in p.channels]
            if len(here) != 1:
                which = "several partners use this channel" if here else "no partner has this channel"
                raise CommandError(
                    f"{which}; name one: `/runbook history &lt;partner&gt; [runbook] [status] [since=7d]`, "
                    f"partners: {', '.join(sorted(catalog.partners))}"
                )
            return here[0], runbook
        if partner_name not in catalog.partners:
            raise CommandError(
                f"no partner named `{partner_name}`{_did_you_mean(partner_name, catalog.partners)}; "
                f"partners: {', '.join(sorted(catalog.partners))}"
            )
        return catalog.partners[partner_name], runbook

    def _scoped(self, wanted: HistoryFilter, partner: Partner, asker: Asker) -> HistoryFilter:
        """`wanted`, narrowed to what the asker may see where they ask; CommandError elsewhere."""
        from dataclasses import replace

        if partner.channels and asker.channel_id in partner.channels:
            return wanted
        if asker.channel_id.startswith("D"):
            if self.is_approver(asker.user_id, partner):
                return wanted
            return replace(wanted, requested_by=asker.user_id)
        if not partner.channels:
            return replace(wanted, channel=asker.channel_id)
        where = ", ".join(f"<#{c}>" for c in partner.channels)
        raise CommandError(
            f"{escape(partner.display_name)}'s history is shown in {where} (or, in a direct message with Runbook Bot, "
            "to its approvers, and to anyone for the runs they started)"
        )

    def _page(self, wanted: HistoryFilter, partner: Partner, cursor: str) -> Message:
        try:
            page = self.store.partner_runs(wanted, PAGE_SIZE, cursor)
        except BadCursor:
            raise CommandError(
                "that *More* button is not one Runbook Bot made; run `/runbook history` again"
            ) from None
        return history_message(partner.display_name, wanted, page, continued=bool(cursor))


# -- rendering (pure) ---------------------------------------------------------------------------


def history_message(
    partner_display: str, wanted: HistoryFilter, page: HistoryPage, *, continued: bool = False
) -> Message:
    what = _described(wanted)
    head = f"{'More of ' if continued else ''}{escape(partner_display)}'s runs{what}, newest first"
    if not page.runs:
        text = f"{head}: none{' more' if continued else ''}."
        if page.cursor:
            text += " Older runs were not read yet: *More* goes on."
        blocks = [section(f":scroll: {text}")]
    else:
        blocks = [section(f":scroll: *{head}*")]
        blocks += [section(_line(run)) for run in page.runs]
        text = f"{head}: " + "; ".join(
            f"{run.execution_id} {run.runbook} {run.status.value}" for run in page.runs
        )
    if page.cursor:
        value = more_value(wanted, page.cursor)
        blocks.append(
            {
                "type": "actions",
                "block_id": "history",
                "elements": [
                    {
                        "type": "button",
                        "action_id": MORE_ACTION,
                        "text": {"type": "plain_text", "text": "More", "emoji": True},
                        "value": value,
                    }
                ],
            }
        )
    elif page.runs:
        blocks.append(context("That is all that matches."))
    return Message(text[:3000], blocks)


def more_value(wanted: HistoryFilter, cursor: str) -> str:
    """What *More* carries: the filter as typed (never who may see it) and where to go on."""
    value = json.dumps(
        {
            "p": wanted.partner,
            "r": wanted.runbook,
            "s": sorted(s.value for s in wanted.statuses),
            "t": wanted.since_ms,
            "c": cursor,
        },
        separators=(",", ":"),
    )
    assert len(value) <= MAX_VALUE, "a history cursor is a few dozen characters"
    return value


def _line(run: Any) -> str:
    drill = "`[DRILL]` " if run.drill else "`[PLAN]` " if run.kind == "plan" else ""
    took = format_duration(run.duration_ms / 1000)
    timing = f"took {took}" if run.status.terminal else f"running {took} so far"
    outcome = run.status.value.replace("_", " ")
    if run.error_code:
        outcome += f" `{escape(run.error_code)}`"
    approvers = ", ".join(mention(a) for a in run.approved_by) or "none"
    return (
        f"{drill}{STATUS_EMOJI[run.status]} `{run.execution_id}` *{run.runbook}* · {outcome} · {timing}\n"
        f"started by {mention(run.requested_by)} {date_token(run.created_at_ms)} · approved by {approvers}"
    )


def _described(wanted: HistoryFilter) -> str:
    parts = []
    if wanted.runbook:
        parts.append(f"of `{wanted.runbook}`")
    if wanted.statuses:
        parts.append("that are " + " or ".join(sorted(s.value for s in wanted.statuses)))
    if wanted.channel:
        parts.append(f"started in <#{wanted.channel}>")
    if wanted.requested_by:
        parts.append(f"started by {mention(wanted.requested_by)}")
    return (" " + ", ".join(parts) if parts else "") + f" since {date_token(wanted.since_ms)}"


def _did_you_mean(name: str, known: Mapping[str, Any] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""
