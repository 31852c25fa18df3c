"""The start form: `/runbook` (or `/runbook start`) opens a modal to pick a runbook, a partner and
the runbook's parameters as typed inputs.

Pure view building and reading: which partners the channel may use and which values are valid
stay where the grammar's path keeps them (Partner.may_run_in, bot.engine.params); the command
service starts the run (bot.slack.commands.CommandService.start_from_form).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.engine.durations import format_duration
from bot.engine.model import ParamType
from bot.text import escape

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.engine.model import Parameter, Runbook
    from bot.partners.model import Partner

START_CALLBACK = "start_run"
RUNBOOK_BLOCK = "start_runbook"  # block_id and action_id of the runbook select
PARTNER_BLOCK = "start_partner"
PLAN_BLOCK = "start_plan"  # block_id and action_id of the *plan first* checkbox
PLAN_OPTION = "plan"
PARAM_PREFIX = "param."
_OPTIONS = 100  # Slack: a static_select holds at most 100 options
_OPTION_TEXT = 75  # ... each option's text at most 75 characters
_HINT = 2000
_NUMBER_LIMIT = 1e15  # what a number_input's min/max may carry without losing digits


@dataclass(frozen=True)
class FormChoice:
    """What an open form says: where it was opened, and the runbook and partner picked so far."""

    channel: str
    runbook: str = ""
    partner: str = ""
    from_home: bool = False  # opened from the App Home: no channel; the run goes to the partner's


@dataclass(frozen=True)
class Filled:
    """A submitted form: the choice and each parameter's typed text (empty fields left out)."""

    choice: FormChoice
    given: dict[str, str] = field(default_factory=dict)
    plan: bool = False  # *plan first*: a dry run (`/runbook plan`), not the run


def metadata(channel: str, from_home: bool = False) -> str:
    data: dict[str, Any] = {"channel": channel}
    if from_home:
        data["home"] = True
    return json.dumps(data, separators=(",", ":"))


def _metadata(view: Mapping[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(str(view.get("private_metadata") or ""))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def channel_of(view: Mapping[str, Any]) -> str:
    """The channel the form was opened from (its private_metadata, which only the app writes)."""
    return str(_metadata(view).get("channel") or "")


def read_choice(view: Mapping[str, Any]) -> FormChoice:
    values = ((view.get("state") or {}).get("values")) or {}
    return FormChoice(
        channel_of(view),
        _selected(values, RUNBOOK_BLOCK),
        _selected(values, PARTNER_BLOCK),
        from_home=_metadata(view).get("home") is True,
    )


def read_form(view: Mapping[str, Any]) -> Filled:
    """A view_submission's view: the choice, and the text of every parameter field for that
    runbook and partner (fields of another runbook cannot be there: their block ids differ)."""
    choice = read_choice(view)
    values = ((view.get("state") or {}).get("values")) or {}
    prefix = param_prefix(choice.runbook, choice.partner)
    given: dict[str, str] = {}
    for block_id, actions in values.items():
        if not str(block_id).startswith(prefix) or not isinstance(actions, dict):
            continue
        text = _value(next(iter(actions.values()), None))
        if text:
            given[str(block_id)[len(prefix) :]] = text
    plan_state = (values.get(PLAN_BLOCK) or {}).get(PLAN_BLOCK) or {}
    chosen = plan_state.get("selected_options") if isinstance(plan_state, dict) else None
    plan = any(isinstance(o, dict) and o.get("value") == PLAN_OPTION for o in chosen or [])
    return Filled(choice, given, plan)


def param_prefix(runbook: str, partner: str) -> str:
    # A new runbook or partner gives new block ids, so Slack does not keep values typed for
    # another partner's limits and tables; the new defaults show instead.
    return f"{PARAM_PREFIX}{runbook}.{partner}."


def usable_partners(catalog: Catalog, choice: FormChoice) -> list[Partner]:
    """The partners whose runbooks may start where the form was opened: in a channel, the
    grammar's rule (may_run_in); from the App Home, those with a channel of their own (the run
    goes to its first one: a run's timeline needs a channel)."""
    if choice.from_home:
        return sorted((p for p in catalog.partners.values() if p.channels), key=lambda p: p.name)
    return sorted(
        (p for p in catalog.partners.values() if p.may_run_in(choice.channel)), key=lambda p: p.name
    )


def run_channel(partner: Partner, choice: FormChoice) -> str:
    """Where the form's run goes: the channel it was opened in, or (App Home) the partner's own."""
    if choice.from_home:
        return partner.channels[0] if partner.channels else ""
    return choice.channel


def start_view(catalog: Catalog, choice: FormChoice) -> dict[str, Any]:
    """The form for what is picked so far: the runbook select always; the partner select once a
    runbook is picked; the parameters, and which steps need approval, once both are."""
    runbooks = sorted(catalog.runbooks.values(), key=lambda r: r.name)
    runbook = catalog.runbooks.get(choice.runbook)
    partners = usable_partners(catalog, choice)
    partner = next((p for p in partners if p.name == choice.partner), None)
    blocks: list[dict[str, Any]] = [
        _select_block(
            RUNBOOK_BLOCK,
            "Runbook",
            [(r.name, f"{r.name} — {r.title}") for r in runbooks],
            runbook.name if runbook else "",
            "Pick the runbook to run",
        )
    ]
    if not partners:
        where = (
            "from here (no partner has a channel of its own)"
            if choice.from_home
            else f"in <#{choice.channel}>"
        )
        blocks.append(_context(f"No partner's runbooks may run {where}; `/runbook list` says where."))
    elif runbook is not None:
        blocks.append(
            _select_block(
                PARTNER_BLOCK,
                "Partner",
                [(p.name, f"{p.name} — {p.display_name}") for p in partners],
                partner.name if partner else "",
                "The run goes to the partner's channel"
                if choice.from_home
                else "Only partners allowed in this channel",
            )
        )
    if runbook is not None:
        if runbook.description:
            blocks.insert(1, _context(escape(runbook.description[:_HINT])))
        if partner is not None:
            blocks += [parameter_block(p, runbook, partner) for p in runbook.parameters]
            blocks.append(plan_block())
        blocks.append(_context(approval_line(runbook)))
    return {
        "type": "modal",
        "callback_id": START_CALLBACK,
        "title": {"type": "plain_text", "text": "Start a runbook"},
        # Slack wants a submit button on a view with inputs; submitted early, the form says what to pick.
        "submit": {"type": "plain_text", "text": "Start"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": metadata(choice.channel, choice.from_home),
        "blocks": blocks,
    }


def plan_block() -> dict[str, Any]:
    """*Plan first*: checked, the form starts a plan (`/runbook plan`): read-only steps for real,
    the exact effects of the others, nothing changed; its *Run this plan* button starts the run."""
    option = {
        "text": {"type": "plain_text", "text": "Plan first (a dry run: nothing is changed)"},
        "description": {
            "type": "plain_text",
            "text": "Shows what each step would do; the plan's Run this plan button starts the run",
        },
        "value": PLAN_OPTION,
    }
    return {
        "type": "input",
        "block_id": PLAN_BLOCK,
        "optional": True,
        "label": {"type": "plain_text", "text": "Plan"},
        "element": {"type": "checkboxes", "action_id": PLAN_BLOCK, "options": [option]},
    }


def approval_line(runbook: Runbook) -> str:
    steps = runbook.approval_steps
    if not steps:
        return "No step of this runbook needs approval: it runs start to finish once started."
    named = ", ".join(f"`{s.id}` ({escape(s.title or s.action)})" for s in steps)
    return f":raised_hand: Needs an approver's click before: {named}."


def parameter_block(p: Parameter, runbook: Runbook, partner: Partner) -> dict[str, Any]:
    """One parameter as a typed input: its partner's override or the runbook's default filled in,
    its description as the hint; optional when a default stands in for an empty field."""
    from bot.engine.params import partner_choices

    block_id = param_prefix(runbook.name, partner.name) + p.name
    default = partner.overrides.get(runbook.name, {}).get(p.name, p.default)
    element: dict[str, Any]
    if p.type in (ParamType.INT, ParamType.NUMBER):
        element = {"type": "number_input", "is_decimal_allowed": p.type is ParamType.NUMBER}
        low, high = p.minimum, _ceiling(p, partner)
        if low is not None and abs(low) < _NUMBER_LIMIT:
            element["min_value"] = _number(low, p)
        if high is not None and abs(high) < _NUMBER_LIMIT:
            element["max_value"] = _number(high, p)
        if isinstance(default, int | float) and not isinstance(default, bool):
            shown = min(default, high) if high is not None else default
            element["initial_value"] = _number(shown, p)
    elif p.type is ParamType.ENUM or p.type is ParamType.BOOL or p.refers_to:
        if p.type is ParamType.BOOL:
            choices = ["true", "false"]
            default = None if default is None else ("true" if default in (True, "true") else "false")
        elif p.refers_to:
            choices, _ = partner_choices(p, partner)
        else:
            choices = list(p.values)
        element = _static_select(
            [(c, c) for c in choices], str(default) if default is not None else "", f"Pick {p.name}"
        )
    else:
        element = {"type": "plain_text_input"}
        if p.type is ParamType.STRING:
            element["max_length"] = min(p.max_length, 3000)
        if default is not None:
            element["initial_value"] = (
                format_duration(float(default))
                if p.type is ParamType.DURATION and isinstance(default, int | float)
                else str(default)
            )
        if p.type is ParamType.DURATION:
            shortest = format_duration(p.minimum) if p.minimum is not None else ""
            longest = format_duration(p.maximum) if p.maximum is not None else ""
            span = (
                f"; from {shortest or '0s'} to {longest}"
                if longest
                else (f"; at least {shortest}" if shortest else "")
            )
            element["placeholder"] = {"type": "plain_text", "text": f"e.g. 90s, 15m, 2h{span}"[:150]}
    element["action_id"] = block_id
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": {"type": "plain_text", "text": p.name},
        "element": element,
        "optional": default is not None or not p.required,
    }
    if p.description:
        block["hint"] = {"type": "plain_text", "text": p.description[:_HINT]}
    return block


def _ceiling(p: Parameter, partner: Partner) -> float | None:
    """The parameter's maximum, lowered to the partner's capacity limit when one caps it."""
    limit = getattr(partner.capacity, p.partner_limit, None) if p.partner_limit else None
    if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
        return min(limit, p.maximum) if p.maximum is not None else float(limit)
    return p.maximum


def _number(value: float, p: Parameter) -> str:
    return str(int(value)) if p.type is ParamType.INT else f"{value:g}"


def _select_block(
    block_id: str, label: str, options: list[tuple[str, str]], initial: str, hint: str
) -> dict[str, Any]:
    element = _static_select(options, initial, f"Pick a {label.lower()}")
    element["action_id"] = block_id
    return {
        "type": "input",
        "block_id": block_id,
        "dispatch_action": True,  # choosing one sends block_actions: the form updates at once
        "label": {"type": "plain_text", "text": label},
        "element": element,
        "hint": {"type": "plain_text", "text": hint},
    }


def _static_select(options: list[tuple[str, str]], initial: str, placeholder: str) -> dict[str, Any]:
    shown = [_option(value, text) for value, text in options[:_OPTIONS]]
    element: dict[str, Any] = {
        "type": "static_select",
        "placeholder": {"type": "plain_text", "text": placeholder[:150]},
        "options": shown,
    }
    chosen = next((o for o in shown if o["value"] == initial), None)
    if chosen is not None:
        element["initial_option"] = chosen
    return element


def _option(value: str, text: str) -> dict[str, Any]:
    clipped = text if len(text) <= _OPTION_TEXT else text[: _OPTION_TEXT - 1] + "…"
    return {"text": {"type": "plain_text", "text": clipped}, "value": value[:150]}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _selected(values: Mapping[str, Any], block_id: str) -> str:
    return _value((values.get(block_id) or {}).get(block_id))


def _value(state: Any) -> str:
    """The text of one element's state, whatever its type (a select's option, a typed value)."""
    if not isinstance(state, dict):
        return ""
    option = state.get("selected_option")
    if isinstance(option, dict):
        return str(option.get("value") or "")
    value = state.get("value")
    return "" if value is None else str(value).strip()
