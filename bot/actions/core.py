"""The engine's own actions: checks, waits, notes, approval gates and explicit endings."""

from __future__ import annotations

from typing import Any

from bot.actions.base import ActionContext, StepOutcome, register
from bot.exceptions import ActionError


class Check:
    """Asserts on earlier outputs: `that` false fails the step with CheckFailed and `message`."""

    name = "check"
    outputs: tuple[str, ...] = ("passed",)
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["that"],
        "properties": {
            "that": {"description": "an expression that must be true, e.g. {{ steps.detect.outputs.x > 0 }}"},
            "message": {"type": "string", "description": "what it means when the check fails"},
            "success": {"type": "string", "description": "what it means when the check passes"},
        },
        "additionalProperties": False,
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        if not _truthy(inputs["that"]):
            raise ActionError("CheckFailed", str(inputs.get("message") or "check failed"), retryable=False)
        return StepOutcome.done(str(inputs.get("success") or "check passed"), {"passed": True})

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return "reads earlier results only; changes nothing"


class Wait:
    """Sleeps without holding a worker: the sweeper wakes the run when the time is up."""

    name = "wait"
    outputs: tuple[str, ...] = ("waited_seconds",)
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["seconds"],
        "properties": {
            "seconds": {
                "description": "how long to wait: a number or an expression",
                "minimum": 0,
                "maximum": 86_400,
            },
            "reason": {"type": "string"},
        },
        "additionalProperties": False,
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        seconds = float(inputs["seconds"])
        if not 0 <= seconds <= 86_400:
            raise ActionError("InvalidInput", f"wait takes 0 to 86400 seconds, got {seconds:g}")
        now = ctx.clock()
        until = (ctx.checkpoint or {}).get("until")
        if until is None:
            until = now + seconds
        if now >= until:
            return StepOutcome.done(f"waited {seconds:g}s", {"waited_seconds": seconds})
        reason = str(inputs.get("reason") or f"waiting {seconds:g}s")
        return StepOutcome.resume_later({"until": until}, reason, due_in_seconds=until - now)

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return f"waits {inputs.get('seconds')}s"


class Notify:
    """Puts a line on the timeline (the channel sees it as a thread reply)."""

    name = "notify"
    outputs: tuple[str, ...] = ("text",)
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string", "maxLength": 2000}},
        "additionalProperties": False,
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        text = str(inputs["text"])[:2000]
        return StepOutcome.done(text, {"text": text})

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return "posts a note on the timeline"


class ApprovalGate:
    """A step that is only a decision: the run waits here until an approver approves."""

    name = "approval"
    outputs: tuple[str, ...] = ("approved",)
    always_high_risk = True
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["effect"],
        "properties": {"effect": {"type": "string", "description": "what approving lets happen"}},
        "additionalProperties": False,
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        return StepOutcome.done("approved; continuing", {"approved": True})

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return str(inputs["effect"])


class Fail:
    """Ends the main path as a failure (the runbook's on_failure steps still run)."""

    name = "fail"
    outputs: tuple[str, ...] = ()
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}, "code": {"type": "string"}},
        "additionalProperties": False,
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        raise ActionError(str(inputs.get("code") or "RunbookFailed"), str(inputs["message"]), retryable=False)

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return "fails the run"


class Succeed:
    """Ends the run successfully here (SSM: isEnd), e.g. when detection finds nothing to fix."""

    name = "succeed"
    outputs: tuple[str, ...] = ("message",)
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"message": {"type": "string"}},
        "additionalProperties": False,
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        message = str(inputs.get("message") or "nothing left to do")
        return StepOutcome.done(message, {"message": message})

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return "ends the run"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in {"", "false", "no", "0", "none"}
    return bool(value)


CHECK = register(Check())
WAIT = register(Wait())
NOTIFY = register(Notify())
APPROVAL = register(ApprovalGate())
FAIL = register(Fail())
SUCCEED = register(Succeed())
ENDS_RUN = frozenset({"succeed"})
