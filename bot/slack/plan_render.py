"""A plan in Slack: one message, every step of the run in order with its mark, and a button that
starts the real run with the same parameters. Pure, like `render`."""

from __future__ import annotations

import json
from typing import Any

from bot.engine import planner
from bot.engine.model import Runbook
from bot.slack.render import (
    MAX_BLOCKS,
    STATUS_EMOJI,
    Message,
    _clip,
    context,
    date_token,
    header,
    mention,
    section,
)
from bot.store.model import Execution, Status
from bot.text import escape

RUN_PLAN_ACTION = "run_plan"
STEP_TEXT_LIMIT = 700  # per step: ten steps and the frame stay well inside one message
PLAN_LABEL = "[PLAN]"

MARKS: dict[str, tuple[str, str]] = {
    "run": (":white_check_mark:", "would run"),
    "approval": (":raised_hand:", "needs approval"),
    "skip": (":fast_forward:", "would skip, because"),
    "end": (":checkered_flag:", "the run would end here"),
    planner.FAILS_ON: (":warning:", "would fail"),
    planner.STOP: (":octagonal_sign:", "the run would stop here"),
    planner.UNSEEN: (":grey_question:", "cannot be previewed"),
    planner.NOT_REACHED: (":heavy_minus_sign:", "not reached"),
    "pending": (":hourglass_flowing_sand:", "planning…"),
}
# What each mark's summary already starts with: said once, in the label.
_SAID = ("needs approval: ", "would skip, because ", "the run would stop here: ", "the run would end here: ")


def planning(ex: Execution, unreachable: str = "") -> Message:
    """The answer to `/runbook plan`: what was started, marked as a plan."""
    text = (
        f"{PLAN_LABEL} Planning `{ex.runbook}` for `{ex.partner}`: plan `{ex.execution_id}`. A plan reads "
        "for real and changes nothing: no approval, no lock. It appears in the channel as one message "
        f"with a *Run this plan* button; `/runbook status {ex.execution_id}` any time."
    )
    if unreachable:
        text += (
            f"\n:warning: I could not post in this channel lately (`{unreachable}`), so the plan cannot "
            f"appear here: invite me first: `/invite @runbook-bot` in <#{ex.channel}>."
        )
    return Message(text, [section(f":mag: {text}")])


def plan_message(ex: Execution, runbook: Runbook, partner_display: str) -> Message:
    """The plan's one channel message, as of the plan's state."""
    rows = planner.marks(ex, runbook)
    done = sum(1 for _, mark, _ in rows if mark not in {"pending", planner.NOT_REACHED})
    if ex.status is Status.SUCCEEDED:
        state = (
            f":mag: *Plan ready*: what `{escape(runbook.name)}` would do for {escape(partner_display)} now"
        )
    elif ex.status.terminal:
        why = f": {escape(ex.error.get('message', ''))}" if ex.error else ""
        state = f"{STATUS_EMOJI[ex.status]} *Plan {ex.status.value.lower().replace('_', ' ')}*{why}"
    else:
        state = f":mag: *Planning…* step {min(done + 1, len(rows))} of {len(rows)}"
    params = ", ".join(f"{escape(str(k))}={escape(str(v))}" for k, v in sorted(ex.params.items()))
    blocks: list[dict[str, Any]] = [
        header(f"{PLAN_LABEL} {runbook.title} · {partner_display}"),
        section(f"{state}\nParameters: {params or 'none'}"),
    ]
    lines = []
    for i, (step, mark, summary) in enumerate(rows, 1):
        emoji, label = MARKS.get(mark, (":small_blue_diamond:", mark))
        said = next((p for p in _SAID if summary.startswith(p)), "")
        what = summary[len(said) :] if said else summary
        joint = " " if label.endswith("because") else ": "
        detail = f"{joint}{escape(_clip(what, STEP_TEXT_LIMIT))}" if what else ""
        line = f"{i}. {emoji} *{escape(step.label)}* — _{label}_{detail}"
        lines.append(line)
        blocks.append(section(line))
    if runbook.on_failure:
        blocks.append(
            context(
                "If the run fails, its on_failure steps run: "
                + ", ".join(f"`{escape(s.id)}`" for s in runbook.on_failure)
            )
        )
    blocks.append(
        context(
            f"Plan `{ex.execution_id}`",
            f"runbook `{escape(ex.runbook)}` v{escape(ex.runbook_version[:7])}",
            f"partner `{escape(ex.partner)}`",
            f"by {mention(ex.requested_by)} {date_token(ex.created_at_ms)}",
            "a dry run: nothing was changed",
        )
    )
    if ex.status is Status.SUCCEEDED:
        blocks.append(run_button(ex))
    blocks = blocks[: MAX_BLOCKS - 1] + blocks[-1:] if len(blocks) > MAX_BLOCKS else blocks
    text = escape(
        f"{PLAN_LABEL} {runbook.title} for {partner_display} ({ex.execution_id}): "
        + ("plan ready" if ex.status is Status.SUCCEEDED else ex.status.value)
        + "; "
        + "; ".join(
            f"{step.id}: {MARKS.get(mark, ('', mark))[1].removesuffix(', because')}" for step, mark, _ in rows
        )
    )
    return Message(_clip(text, 3000), blocks)


def run_button(ex: Execution) -> dict[str, Any]:
    value = json.dumps({"plan_id": ex.execution_id}, separators=(",", ":"))
    return {
        "type": "actions",
        "block_id": f"plan:{ex.execution_id}",
        "elements": [
            {
                "type": "button",
                "action_id": RUN_PLAN_ACTION,
                "style": "primary",
                "value": value,
                "text": {"type": "plain_text", "text": "Run this plan", "emoji": True},
                "confirm": {
                    "title": {"type": "plain_text", "text": "Start the run?"},
                    "text": {
                        "type": "mrkdwn",
                        "text": "It starts the real run with the same parameters; each step marked "
                        "needs approval still waits for an approver.",
                    },
                    "confirm": {"type": "plain_text", "text": "Start the run"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            }
        ],
    }


def plan_id_of(raw_value: str) -> str:
    """The plan id a Run this plan button carries; ValueError when the value is not one."""
    from bot.slack.grammar import EXECUTION_ID

    try:
        plan_id = json.loads(raw_value)["plan_id"]
    except (ValueError, TypeError, KeyError):
        raise ValueError("this button does not name a plan; run `/runbook plan` again") from None
    if not isinstance(plan_id, str) or not EXECUTION_ID.fullmatch(plan_id):
        raise ValueError("this button does not name a plan; run `/runbook plan` again")
    return plan_id
