"""Block Kit rendering: pure functions from executions, events and catalogs to messages.

Every message has a plain-text fallback (`text`) that reads well in a notification or on a
phone; blocks respect Slack's limits (section text 3000, header 150, button text 75, 50 blocks).
People are mentions, times are Slack date tokens, durations are human-readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.engine.durations import format_duration
from bot.engine.model import Runbook
from bot.store.model import Approval, EventKind, Execution, Status, TimelineEvent
from bot.text import escape

__all__ = ["Message", "escape"]

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
BUTTON_LIMIT = 75
MAX_BLOCKS = 50
DECISION_DIALOG = "approval_decision"  # callback_id of the reason/comment dialog
NOTE_BLOCK = "note"  # block_id and action_id of its text field
NOTE_MAX_LENGTH = 1000

STATUS_EMOJI = {
    Status.PENDING: ":hourglass_flowing_sand:",
    Status.RUNNING: ":arrows_counterclockwise:",
    Status.AWAITING_APPROVAL: ":raised_hand:",
    Status.APPROVED: ":white_check_mark:",
    Status.SUCCEEDED: ":large_green_circle:",
    Status.FAILED: ":red_circle:",
    Status.CANCELLED: ":no_entry_sign:",
    Status.TIMED_OUT: ":alarm_clock:",
}
EVENT_EMOJI = {
    EventKind.RUN_STARTED: ":rocket:",
    EventKind.STEP_STARTED: ":arrow_forward:",
    EventKind.STEP_FINISHED: ":white_check_mark:",
    EventKind.STEP_FAILED: ":x:",
    EventKind.STEP_SKIPPED: ":fast_forward:",
    EventKind.STEP_RETRY: ":repeat:",
    EventKind.APPROVAL_REQUESTED: ":raised_hand:",
    EventKind.APPROVAL_GRANTED: ":heavy_check_mark:",
    EventKind.APPROVAL_REJECTED: ":no_entry:",
    EventKind.APPROVAL_EXPIRED: ":hourglass:",
    EventKind.APPROVAL_VOTED: ":ballot_box_with_check:",
    EventKind.APPROVAL_REMINDER: ":bell:",
    EventKind.CANCEL_REQUESTED: ":octagonal_sign:",
    EventKind.SLA_WARNING: ":warning:",
    EventKind.RUN_SUCCEEDED: ":tada:",
    EventKind.RUN_FAILED: ":red_circle:",
    EventKind.RUN_CANCELLED: ":no_entry_sign:",
    EventKind.RUN_TIMED_OUT: ":alarm_clock:",
    EventKind.RUN_RESUMED: ":arrows_counterclockwise:",
}


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


# -- primitives --------------------------------------------------------------------------------


def mention(actor: str) -> str:
    if actor.startswith("alarm:"):
        return f"alarm `{escape(actor[6:])}`"
    if actor.startswith("S"):
        return f"<!subteam^{actor}>"
    return f"<@{actor}>" if actor else "Runbook Bot"


def date_token(at_ms: int, fmt: str = "{date_short_pretty} {time}") -> str:
    import time

    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at_ms / 1000))
    return f"<!date^{at_ms // 1000}^{fmt}|{fallback}>"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_LIMIT)}}


def context(*parts: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(p, SECTION_LIMIT)} for p in parts[:10]],
    }


def header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _clip(text, HEADER_LIMIT), "emoji": True},
    }


def steps_done(ex: Execution) -> tuple[int, int]:
    """(steps the run has been through, its main path's length): what the bar and the end count."""
    done = sum(1 for r in ex.steps.values() if r.outcome in {"succeeded", "failed", "skipped"})
    total = max(ex.total_steps, 1)
    return min(done, total), total


def progress_bar(done: int, total: int, width: int = 10) -> str:
    if total <= 0:
        return ""
    filled = round(width * min(done, total) / total)
    return "▰" * filled + "▱" * (width - filled) + f" {min(done, total)}/{total}"


def sla_text(ex: Execution, now_ms: int) -> str:
    if not ex.sla_resolution_minutes:
        return "no SLA"
    window = ex.sla_resolution_minutes * 60_000
    end = (ex.updated_at_ms if ex.status.terminal else now_ms) - ex.created_at_ms
    left = window - end
    if ex.status.terminal:
        took = format_duration(end / 1000)
        if left < 0:
            return f":rotating_light: took {took}: {format_duration(-left / 1000)} past the {ex.sla_resolution_minutes}-min SLA"
        return f"took {took}, within the {ex.sla_resolution_minutes}-min SLA ({end / window:.0%} used)"
    used = end / window
    if left < 0:
        return f":rotating_light: SLA breached {format_duration(-left / 1000)} ago ({ex.sla_resolution_minutes} min)"
    marker = ":warning: " if used >= ex.sla_warn_at else ""
    return f"{marker}SLA: {format_duration(left / 1000)} left of {ex.sla_resolution_minutes} min ({used:.0%} used)"


# -- the run's parent message and timeline ------------------------------------------------------


def parent_message(
    ex: Execution,
    runbook_title: str,
    partner_display: str,
    now_ms: int,
    step_titles: Mapping[str, str] | None = None,
) -> Message:
    titles = step_titles or {}
    done, total = steps_done(ex)
    elapsed = format_duration(
        ((ex.updated_at_ms if ex.status.terminal else now_ms) - ex.created_at_ms) / 1000
    )
    drill = "[DRILL] " if ex.drill else "[PLAN] " if ex.kind == "plan" else ""
    status = f"{STATUS_EMOJI[ex.status]} *{ex.status.value.replace('_', ' ')}*"
    if ex.status is Status.AWAITING_APPROVAL and ex.approval:
        waits = (
            "paused by a guard alarm: resume or abort?"
            if ex.approval.kind == "guard"
            else "needs an approver"
        )
        status += f" — *{escape(titles.get(ex.approval.step_id, ex.approval.step_id))}* {waits}"
        if ex.approval.required > 1:
            status += f" ({len(ex.approval.votes)} of {ex.approval.required} approvals)"
    if ex.error and ex.status.terminal:
        by = f" by {mention(ex.error['by'])}" if ex.error.get("by") else ""
        status += f" — `{escape(ex.error.get('code', ''))}`: {escape(ex.error.get('message', ''))}{by}"
    origin = mention(ex.requested_by)
    timing = f"took {elapsed}" if ex.status.terminal else f"elapsed {elapsed}"
    blocks = [
        header(f"{drill}{runbook_title} · {partner_display}"),
        section(f"{status}\n`{progress_bar(done, total)}` steps · {timing}"),
        context(
            f"Execution `{ex.execution_id}`",
            f"runbook `{escape(ex.runbook)}` v{escape(ex.runbook_version[:7])}",
            f"partner `{escape(ex.partner)}`",
            f"started by {origin} {date_token(ex.created_at_ms)}",
            sla_text(ex, now_ms),
            *([escape(drill_label(ex))] if ex.drill else []),
        ),
    ]
    text = escape(
        f"{drill}{runbook_title} for {partner_display} ({ex.execution_id}): {ex.status.value}, "
        f"step {done} of {total}"
        + ("" if ex.status.terminal and ex.sla_resolution_minutes else f", {timing}")
        + f"; {sla_text(ex, now_ms)}"
    )
    return Message(text, blocks)


def timeline_reply(
    ex: Execution, event: TimelineEvent, error_meaning: str | None = None, step_title: str = ""
) -> Message:
    emoji = EVENT_EMOJI.get(event.kind, ":small_blue_diamond:")
    title = f"*{escape(step_title)}* — " if step_title else ""
    drill = "`[DRILL]` " if ex.drill else ""
    line = f"{drill}{emoji} {title}{_mrkdwn_summary(event.summary)}"
    if event.duration_ms is not None and event.kind in {EventKind.STEP_FINISHED, EventKind.STEP_FAILED}:
        line += f" _({format_duration(event.duration_ms / 1000)})_"
    details: list[str] = []
    if event.error_code:
        meaning = f": {escape(error_meaning)}" if error_meaning else ""
        details.append(f"`{escape(event.error_code)}`{meaning}")
    figures = {k: v for k, v in event.figures.items() if k not in {"expires_at_ms"}}
    if figures:
        details.append(
            " · ".join(f"{escape(str(k))}: *{escape(_figure(v))}*" for k, v in list(figures.items())[:8])
        )
    who = f"by {mention(event.actor)} " if event.actor else ""
    blocks = [section(line)]
    if details:
        blocks.append(section("\n".join(details)))
    blocks.append(
        context(f"{who}{date_token(event.at_ms, '{time_secs}')} · #{event.seq} · `{ex.execution_id}`")
    )
    text = f"{'[DRILL] ' if ex.drill else ''}{event.kind.value.replace('_', ' ')}: {step_title + ' — ' if step_title else ''}{event.summary}"
    if event.error_code:
        text += f" [{event.error_code}]"
    return Message(_clip(escape(text), 3000), blocks)


EXPORT_ACTION = "export_evidence"


def with_export_button(message: Message, execution_id: str) -> Message:
    """A run's last message, with *Export evidence*: the evidence file goes to this thread."""
    button = {
        "type": "actions",
        "block_id": "evidence",
        "elements": [
            {
                "type": "button",
                "action_id": EXPORT_ACTION,
                "text": {"type": "plain_text", "text": "Export evidence", "emoji": True},
                "value": execution_id,
            }
        ],
    }
    return Message(message.text, [*message.blocks, button][-MAX_BLOCKS:])


def approval_request(
    ex: Execution,
    step_id: str,
    step_title: str,
    effect: str,
    approvers: tuple[str, ...],
    expires_at_ms: int,
    *,
    version: int,
    approval: Approval | None = None,
) -> Message:
    """The approval message: what will change, who may decide, where the quorum stands, buttons.
    `approval` (the run's pending one) adds "1 of 2 approvals" and who approved so far."""
    value = json.dumps(
        {"execution_id": ex.execution_id, "step_id": step_id, "version": version}, separators=(",", ":")
    )
    who = ", ".join(mention(a) for a in approvers) or "(no approvers configured)"
    drill = f"*{escape(drill_label(ex))}*\n" if ex.drill else ""
    standing = quorum_line(approval) if approval else ""
    words = _GUARD_WORDS if approval and approval.kind == "guard" else _APPROVAL_WORDS
    blocks = [
        section(
            f"{drill}{words['heading']}: {escape(step_title or step_id)}*\n{_mrkdwn_summary(effect)}"
            + (f"\n{standing}" if standing else "")
        ),
        context(
            f"Who may decide: {who} (not the requester, {mention(ex.requested_by)}); each approver decides once",
            f"expires {date_token(expires_at_ms, '{time}')}",
            f"`{ex.execution_id}`",
        ),
        {
            "type": "actions",
            "block_id": f"approval:{step_id}"[:255],
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "style": "primary",
                    "value": value,
                    "text": {"type": "plain_text", "text": words["approve"], "emoji": True},
                    "confirm": {
                        "title": {"type": "plain_text", "text": f"{words['approve']} this step?"},
                        "text": {"type": "mrkdwn", "text": _clip(escape(effect), 300)},
                        "confirm": {"type": "plain_text", "text": words["approve"]},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                },
                {
                    "type": "button",
                    "action_id": "approve_comment",
                    "value": value,
                    "text": {"type": "plain_text", "text": f"{words['approve']} with comment", "emoji": True},
                },
                {
                    "type": "button",
                    "action_id": "reject",
                    "style": "danger",
                    "value": value,
                    "text": {"type": "plain_text", "text": words["reject"], "emoji": True},
                },
            ],
        },
    ]
    text = f"{drill_label(ex) + ' ' if ex.drill else ''}{words['plain']} {step_title or step_id} ({ex.execution_id}): {effect}"
    if approval and approval.required > 1:
        text += f" ({len(approval.votes)} of {approval.required} approvals)"
    text = escape(text)
    return Message(_clip(text, 3000), blocks)


# What the approval message's heading and buttons say: a risky step's approval, or a guard pause.
_APPROVAL_WORDS = {
    "heading": ":raised_hand: *Approval needed",
    "approve": "Approve",
    "reject": "Reject",
    "plain": "Approval needed for",
}
_GUARD_WORDS = {
    "heading": ":octagonal_sign: *Paused by a guard alarm, resume or abort",
    "approve": "Resume",
    "reject": "Abort",
    "plain": "Paused by a guard alarm, resume or abort:",
}


def quorum_line(approval: Approval) -> str:
    """`*1 of 2 approvals* (critical): <@U1> "looks right"`, or "" for a single approver not yet given."""
    if approval.required <= 1 and not approval.votes:
        return ""
    count = f"*{len(approval.votes)} of {approval.required} approval{'s' if approval.required != 1 else ''}*"
    risk = f" ({escape(approval.risk)} risk)" if approval.risk == "critical" else ""
    votes = ", ".join(
        mention(v.user) + (f" “{_clip(escape(v.comment), 200)}”" if v.comment else "") for v in approval.votes
    )
    return f"{count}{risk}" + (f": {votes}" if votes else "")


def approval_decided(
    ex: Execution,
    step_id: str,
    step_title: str,
    effect: str,
    decision: str,
    decided_by: str,
    decided_at_ms: int,
    approval: Approval | None = None,
) -> Message:
    emoji = {"approved": ":heavy_check_mark:", "rejected": ":no_entry:"}.get(decision, ":hourglass:")
    by = f" by {mention(decided_by)}" if decided_by else ""
    approval = approval if approval and approval.step_id == step_id else None
    if approval and approval.kind == "guard":  # a guard pause is resumed or aborted
        decision = {"approved": "resumed", "rejected": "aborted"}.get(decision, decision)
    lines = [
        f"{'`[DRILL]` ' if ex.drill else ''}{emoji} *{escape(step_title or step_id)}: {decision}{by}*",
        _mrkdwn_summary(effect),
    ]
    if approval and (approval.votes or approval.required > 1):
        lines.append(quorum_line(approval))
    if approval and decision == "rejected" and approval.reason:
        lines.append(f"Reason: {_clip(escape(approval.reason), 1000)}")
    blocks = [
        section("\n".join(line for line in lines if line)),
        context(f"{decision} {date_token(decided_at_ms)}", f"`{ex.execution_id}`"),
    ]
    drill = "[DRILL] " if ex.drill else ""
    plain_by = f" by @{decided_by}" if decided_by else ""  # no ping from a notification's text
    return Message(escape(f"{drill}{step_title or step_id} {decision}{plain_by} ({ex.execution_id})"), blocks)


def approval_reminder(
    ex: Execution, event: TimelineEvent, step_title: str, approvers: tuple[str, ...]
) -> Message:
    """Half the expiry passed and nobody decided: the thread mentions the approvers again."""
    who = ", ".join(mention(a) for a in approvers) or "(no approvers configured)"
    drill = "`[DRILL]` " if ex.drill else ""
    expires = int(event.figures.get("expires_at_ms") or 0)
    line = (
        f"{drill}:bell: *{escape(step_title or event.step_id)}* — {_mrkdwn_summary(event.summary)}\n"
        f"{who}: please decide with the buttons on the approval message above"
        + (f" before {date_token(expires, '{time}')}" if expires else "")
    )
    blocks = [section(line), context(f"#{event.seq} · `{ex.execution_id}`")]
    text = escape(
        f"{'[DRILL] ' if ex.drill else ''}Reminder: {step_title or event.step_id} — {event.summary}"
    )
    return Message(_clip(text, 3000), blocks)


def decision_dialog(
    ex: Execution, private_metadata: str, step_title: str, *, approve: bool
) -> dict[str, Any]:
    """The modal a Reject (reason, required) or "Approve with comment" click opens."""
    approval = ex.approval
    effect = approval.effect if approval else ""
    standing = quorum_line(approval) if approval else ""
    words = _GUARD_WORDS if approval and approval.kind == "guard" else _APPROVAL_WORDS
    verb = words["approve"] if approve else words["reject"]
    label = (
        "Your comment (kept on the timeline)" if approve else f"Why {verb.lower()} it? (kept on the timeline)"
    )
    return {
        "type": "modal",
        "callback_id": DECISION_DIALOG,
        "title": {"type": "plain_text", "text": f"{verb} with comment" if approve else f"{verb} this step"},
        "submit": {"type": "plain_text", "text": verb},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": private_metadata,
        "blocks": [
            section(
                f"{'*' + escape(drill_label(ex)) + '*' + chr(10) if ex.drill else ''}"
                f"*{escape(step_title)}* in `{ex.execution_id}` ({escape(ex.runbook)} for {escape(ex.partner)})\n"
                f"{_clip(_mrkdwn_summary(effect), 2000)}" + (f"\n{standing}" if standing else "")
            ),
            {
                "type": "input",
                "block_id": NOTE_BLOCK,
                "label": {"type": "plain_text", "text": label},
                "element": {
                    "type": "plain_text_input",
                    "action_id": NOTE_BLOCK,
                    "multiline": True,
                    "max_length": NOTE_MAX_LENGTH,
                    "placeholder": {
                        "type": "plain_text",
                        "text": "e.g. checked the partner's dashboard: safe now"
                        if approve
                        else "e.g. the partner is mid-deploy; retry after 14:00",
                    },
                },
            },
            context("Nothing changes until you submit. Cancel leaves the approval waiting."),
        ],
    }


def form_started(text: str) -> dict[str, Any]:
    """What the start form turns into when its run started but Slack would not take the
    ephemeral message saying so (the bot is not in the channel, Slack slow)."""
    return {
        "type": "modal",
        "callback_id": "start_run_done",
        "title": {"type": "plain_text", "text": "Run started"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [section(f":rocket: {_clip(text, 2900)}")],
    }


def dialog_refused(explanation: str) -> dict[str, Any]:
    """What the dialog turns into when its submission changes nothing (moved on, expired, ...)."""
    return {
        "type": "modal",
        "callback_id": DECISION_DIALOG,
        "title": {"type": "plain_text", "text": "Nothing changed"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [section(f":information_source: {explanation}")],
    }


# -- answers to commands ------------------------------------------------------------------------


def refusal(reason: str) -> Message:
    return Message(_clip(reason, 3000), [section(reason)])


def started(ex: Execution, unreachable: str = "") -> Message:
    what = "drill of" if ex.drill else ""
    text = (
        f"Started {what + ' ' if what else ''}`{ex.runbook}` for `{ex.partner}`: execution `{ex.execution_id}`. "
        f"Progress is in the channel's thread; `/runbook status {ex.execution_id}` any time."
    )
    if ex.drill:
        text += f"\n{drill_label(ex)}: against the drill targets only, never production."
    if ex.forced_over:
        text += f"\nForced past the table lock of `{ex.forced_over}`; the timeline says so."
    if unreachable:
        fix = (
            "this channel is archived: start it in one of the partner's other channels"
            if unreachable in {"is_archived", "is_inactive"}
            else f"invite me first: `/invite @runbook-bot` in <#{ex.channel}>"
        )
        text += (
            f"\n:warning: I could not post in this channel lately (`{unreachable}`), so the run's "
            f"timeline and approval buttons cannot appear here: {fix}. The timeline catches up once I can."
        )
    return Message(text, [section(f":rocket: {text}")])


def drill_label(ex: Execution) -> str:
    """`[DRILL] faults throttle=20%, timeout=2% · time limit 10m 00s`, or "" for a real run."""
    if not ex.drill:
        return ""
    faults = ", ".join(f"{k}={v:.0%}" for k, v in sorted(ex.drill_faults.items())) or "none"
    limit = (
        f" · time limit {format_duration(((ex.drill_until_ms or 0) - ex.created_at_ms) / 1000)}"
        if ex.drill_until_ms
        else ""
    )
    return f"[DRILL] faults {faults}{limit}"


def run_list(runbooks: Mapping[str, Runbook], partners: Mapping[str, Any], channel_id: str) -> Message:
    usable = [p for p in partners.values() if p.may_run_in(channel_id)]
    elsewhere = [p for p in partners.values() if not p.may_run_in(channel_id)]
    lines = ["*Runbooks*"] + [
        f"• `{r.name}` — {escape(r.title)}" + (" _(has steps needing approval)_" if r.approval_steps else "")
        for r in sorted(runbooks.values(), key=lambda r: r.name)
    ]
    lines.append("*Partners you can run here*")
    lines += [f"• `{p.name}` — {escape(p.display_name)}" for p in usable] or ["• none in this channel"]
    if elsewhere:
        lines.append(
            "*Elsewhere*: "
            + ", ".join(f"`{p.name}` in " + ", ".join(f"<#{c}>" for c in p.channels) for p in elsewhere)
        )
    lines.append("Start one: `/runbook &lt;runbook&gt; &lt;partner&gt; [key=value ...]`")
    text = "\n".join(lines)
    return Message(_clip(text, 3000), [section(text)])


def help_text(runbook: Runbook | None, runbooks: Mapping[str, Runbook]) -> Message:
    from bot.engine.params import describe_parameter
    from bot.slack.grammar import GRAMMAR

    if runbook is None:
        text = f"*Runbook Bot*\n{GRAMMAR}\nRunbooks: " + ", ".join(f"`{n}`" for n in sorted(runbooks))
        return Message(text, [section(text)])
    steps = []
    for i, step in enumerate(runbook.steps, 1):
        risk = " :raised_hand: *needs approval*" if step.risk.asks_approval else ""
        steps.append(f"{i}. `{step.id}` {escape(step.title or step.action)} ({step.action}){risk}")
    rollback = [f"• `{s.id}` {escape(s.title or s.action)}" for s in runbook.on_failure]
    params = [
        f"• {escape(describe_parameter(p))}" + (f" — {escape(p.description)}" if p.description else "")
        for p in runbook.parameters
    ]
    parts = [
        f"*{escape(runbook.title)}* (`{runbook.name}`)",
        escape(runbook.description.strip()),
        "*Steps*",
        *steps,
    ]
    if rollback:
        parts += ["*On failure*", *rollback]
    parts += [
        "*Parameters*",
        *(params or ["• none"]),
        f"Start: `/runbook {runbook.name} &lt;partner&gt; [key=value ...]`",
    ]
    text = "\n".join(p for p in parts if p)
    return Message(_clip(text, 3000), [section(t) for t in _chunks(text)][:MAX_BLOCKS])


def status_text(ex: Execution, runbook: Runbook, partner_display: str = "") -> Message:
    import time

    titles = step_titles(runbook)
    message = parent_message(
        ex, runbook.title, partner_display or ex.partner, int(time.time() * 1000), titles
    )
    current = (
        f"\nNext step: *{escape(titles.get(ex.cursor, ex.cursor))}*"
        if ex.cursor and not ex.status.terminal
        else ""
    )
    return Message(
        message.text + escape(current.replace("*", "")),
        [*message.blocks, *([section(current)] if current else [])],
    )


def step_titles(runbook: Runbook) -> dict[str, str]:
    return {s.id: s.label for s in (*runbook.steps, *runbook.on_failure)}


def timeline_text(ex: Execution, runbook: Runbook | None = None, partner_display: str = "") -> Message:
    titles = step_titles(runbook) if runbook else {}
    lines = [
        f"{'[PLAN] ' if ex.kind == 'plan' else ''}*Timeline of `{ex.execution_id}`* ({escape(runbook.title if runbook else ex.runbook)} for "
        f"{escape(partner_display or ex.partner)}, {ex.status.value})"
    ]
    last_actor = ""
    for event in ex.timeline[-40:]:
        # Name who acted once, where it changes: not "— @lead" on every line of a run they started.
        who = f" — {mention(event.actor)}" if event.actor and event.actor != last_actor else ""
        last_actor = event.actor or last_actor
        code = f" `{escape(event.error_code)}`" if event.error_code else ""
        step = f"*{escape(titles.get(event.step_id, event.step_id))}*: " if event.step_id else ""
        lines.append(
            f"{date_token(event.at_ms, '{time_secs}')} {EVENT_EMOJI.get(event.kind, '•')} "
            f"{step}{_mrkdwn_summary(event.summary)}{code}{who}"
        )
    if len(ex.timeline) > 40:
        lines.insert(1, f"_(last 40 of {len(ex.timeline)} events; the channel thread has them all)_")
    text = "\n".join(lines)
    return Message(_clip(text, 3000), [section(t) for t in _chunks(text)][:MAX_BLOCKS])


def errors_text(catalog: Any, code: str | None) -> Message:
    if code:
        entry = catalog.entry(code)
        if entry is None:
            known = ", ".join(e.code for e in catalog.entries())
            return refusal(f"`{escape(code)}` is not in the error catalog. Codes: {known}")
        text = (
            f"*{entry.code}* ({entry.service}) — {'retryable' if entry.retryable else 'not retryable'}\n"
            f"{escape(entry.meaning)}\n*What the runbooks do:* {escape(entry.decision)}"
        )
        return Message(text, [section(text)])
    entries = list(catalog.entries())
    lines = [
        f"*Error catalog*: {len(entries)} codes. ↻ marks the ones the engine retries with backoff; "
        "`/runbook errors <Code>` shows one entry with what the runbooks do about it."
    ]
    lines += [
        f"• `{e.code}`{' ↻' if e.retryable else ''} — {escape(e.meaning.split('. ')[0].rstrip('.'))}"
        for e in entries
    ]
    text = "\n".join(lines)
    return Message(_clip(text, 3000), [section(t) for t in _chunks(text)][:MAX_BLOCKS])


def _mrkdwn_summary(text: str) -> str:
    """Summaries are plain text (they quote parameters, partner data and AWS errors): escaped
    whole. Mentions come only from structured fields (an event's actor, an error's `by`)."""
    return escape(text)


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)[:200]


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word (never inside a word or an &entity;)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + "…"


def _chunks(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    chunks, current = [], ""
    for line in text.split("\n"):
        if len(current) + len(line) + 1 > limit and current:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line[:limit]
    return [*chunks, current] if current else chunks
