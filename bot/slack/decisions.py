"""Approve/reject clicks and the reason/comment dialog: one conditional write per decision.

Each approver decides once. A click re-reads the run and tries again when another writer moved
it first (a second approver clicking at the same moment): both approvals count, neither twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.engine import machine
from bot.exceptions import ClaimHeld, CommandError, TransitionConflict
from bot.slack import render
from bot.slack.approvals import ButtonValue, parse_button_value, refusal
from bot.store.model import Execution

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.engine.executor import Executor
    from bot.store.executions import ExecutionStore

DECIDE_ATTEMPTS = 6  # reads and conditional writes one click may make while others move the run
DECIDE_SECONDS = 1.5  # ... within this long: the click's answer must stay inside Slack's 3 seconds
NOTE_LIMIT = 1000  # characters of a reason or comment (the dialog's input enforces it too)
DIALOG_CALLBACK = render.DECISION_DIALOG


@dataclass(frozen=True)
class DecisionResult:
    decided: bool
    explanation: str  # for the clicker, ephemeral, when nothing changed


@dataclass(frozen=True)
class Dialog:
    """What a Reject or "Approve with comment" click gets: the dialog to open, or why not."""

    view: dict[str, Any] | None
    refusal: str = ""


@dataclass(frozen=True)
class Submission:
    """The answer to a dialog's submission: decided (the dialog closes), an error on the text
    field (`field_error`: Slack shows it under the field), or a refusal that replaces the dialog."""

    decided: bool
    field_error: str = ""
    refusal: str = ""


class DecisionService:
    def __init__(
        self,
        store: ExecutionStore,
        catalog: Callable[[], Catalog],
        executor: Callable[[], Executor],
        members_of: Callable[[str], frozenset[str]],
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.executor = executor
        self.members_of = members_of
        self.now_ms = now_ms
        self.sleep = sleep

    def decide(self, user_id: str, raw_value: str, *, approve: bool, note: str = "") -> DecisionResult:
        """A click (or a submitted dialog) decides: `note` is the comment or the reason."""
        try:
            button = parse_button_value(raw_value)
        except CommandError as error:
            return DecisionResult(False, str(error))
        deadline = time.monotonic() + DECIDE_SECONDS
        for attempt in range(DECIDE_ATTEMPTS):
            ex, why_not = self._check(user_id, button)
            if why_not or ex is None:
                return DecisionResult(False, why_not)
            runbook = self.catalog().runbooks[ex.runbook]
            now = self.now_ms()
            t = machine.decide(ex, runbook, user_id, approve, now, self.executor().when, None, note=note)
            try:
                self.store.move(ex.execution_id, t, f"click-{user_id}", now)
                return DecisionResult(True, "")
            except ClaimHeld:
                # Another click (or the sweeper) is between its claim and its write: wait briefly.
                if time.monotonic() + 0.05 * (attempt + 1) > deadline:
                    break
                self.sleep(0.05 * (attempt + 1))
            except TransitionConflict:
                pass  # moved first: read it again; the refusal says so if nothing is left to decide
            if time.monotonic() > deadline:
                break
        return DecisionResult(
            False,
            "the run is changing right now (others are deciding, or its approval is expiring); nothing "
            "changed. Look at the thread in a moment and click again if it still waits",
        )

    def dialog(self, user_id: str, raw_value: str, *, approve: bool) -> Dialog:
        """The reason (Reject) or comment (Approve with comment) dialog, if the clicker may decide."""
        try:
            button = parse_button_value(raw_value)
        except CommandError as error:
            return Dialog(None, str(error))
        ex, why_not = self._check(user_id, button)
        if why_not or ex is None or ex.approval is None:
            return Dialog(None, why_not)
        runbook = self.catalog().runbooks[ex.runbook]
        step_title = ex.approval.step_id
        try:
            step = runbook.step(ex.approval.step_id)
            step_title = step.label
        except KeyError:
            pass
        return Dialog(render.decision_dialog(ex, button_value(button, approve), step_title, approve=approve))

    def submit(self, user_id: str, private_metadata: str, note: str) -> Submission:
        """A submitted dialog: the version, expiry and the clicker's rights are checked again
        (the run may have moved on while the dialog was open), then it decides like a click."""
        try:
            data = json.loads(private_metadata)
            approve = data["decision"] == "approve"
            raw_value = json.dumps(
                {k: data[k] for k in ("execution_id", "step_id", "version")}, separators=(",", ":")
            )
        except (ValueError, TypeError, KeyError):
            return Submission(False, refusal="this dialog does not carry a valid approval; nothing changed")
        note = " ".join(note.split())  # one line on the timeline, however it was typed
        if not approve and not note:
            return Submission(
                False, field_error="Say why you reject this step: the timeline and the audit record keep it."
            )
        if len(note) > NOTE_LIMIT:
            return Submission(
                False, field_error=f"Keep it under {NOTE_LIMIT} characters (it is {len(note)})."
            )
        result = self.decide(user_id, raw_value, approve=approve, note=note)
        if result.decided:
            return Submission(True)
        return Submission(False, refusal=result.explanation)

    def _check(self, user_id: str, button: ButtonValue) -> tuple[Execution | None, str]:
        ex = self.store.get(button.execution_id)
        if ex is None:
            return None, f"execution {button.execution_id} does not exist; nothing changed"
        catalog = self.catalog()
        partner = catalog.partners.get(ex.partner)
        if partner is None or ex.runbook not in catalog.runbooks:
            return None, f"{ex.partner}/{ex.runbook} is no longer configured; nothing changed"
        return ex, refusal(user_id, ex, button, partner, self.members_of, self.now_ms()) or ""


def button_value(button: ButtonValue, approve: bool) -> str:
    """The dialog's private_metadata: the approval it decides, and which way."""
    return json.dumps(
        {
            "execution_id": button.execution_id,
            "step_id": button.step_id,
            "version": button.version,
            "decision": "approve" if approve else "reject",
        },
        separators=(",", ":"),
    )


def unsaid(approve: bool, why: str) -> str:
    """The note of a decision whose dialog could not open: it says that, and why."""
    what = "comment" if approve else "reason"
    return f"(no {what} given: the {what} dialog could not open: {why})"
