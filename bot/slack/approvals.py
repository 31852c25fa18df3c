"""Who may decide a risky step. Pure: user-group membership is looked up by the caller."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bot.engine.machine import quorum_text
from bot.exceptions import CommandError
from bot.partners.model import Partner
from bot.store.model import Execution, Status


@dataclass(frozen=True)
class ButtonValue:
    """What an approve/reject button carries: which approval, of which version of the run."""

    execution_id: str
    step_id: str
    version: int


def parse_button_value(raw: str) -> ButtonValue:
    try:
        data = json.loads(raw)
        return ButtonValue(str(data["execution_id"]), str(data["step_id"]), int(data["version"]))
    except (ValueError, TypeError, KeyError):
        raise CommandError(
            "this button does not carry a valid approval (expected execution_id, step_id and version); "
            "use the buttons on the latest approval message, or `/runbook status &lt;execution-id&gt;`"
        ) from None


def refusal(
    user_id: str,
    ex: Execution,
    button: ButtonValue,
    partner: Partner,
    members_of: Callable[[str], frozenset[str]],
    now_ms: int,
) -> str | None:
    """Why `user_id` may not decide this approval, or None when they may."""
    if ex.status is not Status.AWAITING_APPROVAL or ex.approval is None:
        if ex.approval and ex.approval.step_id == button.step_id and ex.approval.decision:
            who = f" by <@{ex.approval.decided_by}>" if ex.approval.decided_by else ""
            return f"this approval was already {ex.approval.decision}{who}; nothing changed"
        return (
            f"execution {ex.execution_id} is {ex.status.value}, not waiting for an approval; nothing changed"
        )
    if ex.approval.step_id != button.step_id or not _same_approval(ex, button.version):
        return (
            f"this approval message is out of date (the run has moved on to {ex.approval.step_id}); "
            "use the latest approval message in the thread"
        )
    if now_ms >= ex.approval.expires_at_ms:
        # The sweeper ends the run on its next pass; a late click must not slip in before it.
        expired = f"<!date^{ex.approval.expires_at_ms // 1000}^{{time}}|when it expired>"
        return f"this approval expired at {expired}; nothing changed. Start the run again to retry the step"
    if user_id == ex.requested_by:
        return (
            "you started this run, so you cannot approve or reject its risky steps; ask one of "
            + approvers_text(partner)
        )
    if not is_approver(user_id, partner, members_of):
        return f"only {partner.display_name}'s approvers may decide this step: {approvers_text(partner)}"
    vote = ex.approval.voted(user_id)
    if vote is not None:
        return (
            f"you approved this step already ({quorum_text(ex.approval)}); each approver decides once, "
            "so nothing changed. It waits for another approver"
        )
    return None


def _same_approval(ex: Execution, version: int) -> bool:
    """The button belongs to the pending approval: it carries a version from the approval's own
    lifetime (asked at `approval.version`; votes and a reminder move the run on while it waits),
    never one of an earlier approval of the same step. Runs from before quorums: the version."""
    assert ex.approval is not None
    if not ex.approval.version:
        return version == ex.version
    return ex.approval.version <= version <= ex.version


def is_approver(user_id: str, partner: Partner, members_of: Callable[[str], frozenset[str]]) -> bool:
    for approver in partner.approvers:
        if approver == user_id:
            return True
        if approver.startswith("S") and user_id in members_of(approver):
            return True
    return False


def approvers_text(partner: Partner) -> str:
    names = [f"<!subteam^{a}>" if a.startswith("S") else f"<@{a}>" for a in partner.approvers]
    return ", ".join(names) or "(the partner file names no approvers)"
