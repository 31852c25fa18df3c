"""Binding a run's parameters: runbook defaults, then the partner's overrides, then the user's."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from bot.engine.durations import format_duration, parse_duration
from bot.engine.model import Parameter, ParamType, Runbook
from bot.exceptions import CommandError
from bot.partners.model import Partner
from bot.text import escape

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
# Strings without a pattern of their own: no markup (<, >, &, |, `), no template braces, no
# control characters. Key values like CUSTOMER#0001 or acct-0001 pass.
SAFE_TEXT = r"[A-Za-z0-9 _.,:;#@+=/()\[\]'\"*%!?~^-]*"


def bind_parameters(runbook: Runbook, partner: Partner, given: dict[str, str]) -> dict[str, Any]:
    """Typed values for every parameter, or a CommandError listing every problem at once.

    Values that name partner things (a table alias, an index, a key attribute) must exist in
    the partner file, and the partner's capacity limits are ceilings: a default above one is
    lowered to it, a value someone asked for above it is refused, saying the limit.
    """
    values, problems = check_parameters(runbook, partner, given)
    if problems:
        listing = "; ".join(describe_parameter(p) for p in runbook.parameters) or "none"
        raise CommandError("; ".join(m for _, m in problems) + f".\nParameters of {runbook.name}: {listing}")
    return values


def check_parameters(
    runbook: Runbook, partner: Partner, given: dict[str, str]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """bind_parameters without the raise: the typed values, and every problem as (the parameter's
    name, or the unknown key given, and the message), for a form that shows each under its field."""
    problems: list[tuple[str, str]] = []
    known = {p.name: p for p in runbook.parameters}
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            problems.append(
                (key, f"unknown parameter `{key}`" + (f"; did you mean `{close[0]}`?" if close else ""))
            )
    values: dict[str, Any] = {}
    overrides = partner.overrides.get(runbook.name, {})
    for p in runbook.parameters:
        raw: Any = given.get(p.name, overrides.get(p.name, p.default))
        source = "given" if p.name in given else ("partner override" if p.name in overrides else "default")
        if raw is None:
            if p.required:
                problems.append((p.name, f"`{p.name}` is required ({describe_parameter(p)})"))
            continue
        try:
            value = coerce(p, raw)
            check_partner_value(p, value, partner)
            values[p.name] = within_limit(p, value, partner, lower=source == "default")
        except ValueError as error:
            problems.append((p.name, f"`{p.name}` ({source}): {error}"))
    return values, problems


def partner_choices(p: Parameter, partner: Partner) -> tuple[list[str], str]:
    """The values a parameter naming a partner thing may take, and what they are ("a table alias")."""
    if p.refers_to == "table":
        return list(partner.tables), "a table alias"
    if p.refers_to == "index":
        return sorted({i.name for t in partner.tables.values() for i in t.indexes}), "an index"
    keys = set()
    for t in partner.tables.values():
        for k in (
            t.partition_key,
            t.sort_key,
            *(x for i in t.indexes for x in (i.partition_key, i.sort_key)),
        ):
            if k is not None:
                keys.add(k.name)
    return sorted(keys), "a key attribute"


def check_partner_value(p: Parameter, value: Any, partner: Partner) -> None:
    """A value that names a partner thing must name one the partner file has."""
    if not p.refers_to or value in ("", None):
        return
    choices, what = partner_choices(p, partner)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        raise ValueError(
            f"`{escape(str(value))}` is not {what} of {partner.name} ({', '.join(choices) or 'none'}){hint}"
        )


def within_limit(p: Parameter, value: Any, partner: Partner, *, lower: bool) -> Any:
    """`value` under the partner's limit for `p`; `lower` (a runbook default) brings it down to the
    limit, otherwise a value above the limit is a ValueError that names it."""
    if not p.partner_limit:
        return value
    limits = partner.capacity
    if p.partner_limit == "allow_on_demand":
        if value == "on-demand" and not limits.allow_on_demand:
            raise ValueError(
                f"{partner.name} does not allow on-demand (capacity.allow_on_demand is false in its "
                "partner file); use mode=provisioned"
            )
        return value
    ceiling = getattr(limits, p.partner_limit)
    if not ceiling or value <= ceiling:
        return value
    if lower:
        return type(value)(ceiling)
    raise ValueError(
        f"{_show(p, value)} is above {partner.name}'s limit (capacity.{p.partner_limit} is "
        f"{_show(p, ceiling)}); ask for {_show(p, ceiling)} or less"
    )


def coerce(p: Parameter, raw: Any) -> Any:
    """One value, typed and checked against the parameter's range, pattern or choices."""
    value: Any
    if p.type is ParamType.INT:
        value = _number(raw, int)
    elif p.type is ParamType.NUMBER:
        value = _number(raw, float)
    elif p.type is ParamType.BOOL:
        text = str(raw).strip().lower()
        if isinstance(raw, bool):
            return raw
        if text not in _TRUE | _FALSE:
            raise ValueError(f"`{escape(str(raw))}` is not true or false (yes/no, 1/0 also work)")
        return text in _TRUE
    elif p.type is ParamType.DURATION:
        value = parse_duration(raw)
    elif p.type is ParamType.ENUM:
        text = str(raw)
        if text not in p.values:
            raise ValueError(f"`{escape(text)}` is not one of {', '.join(p.values)}")
        return text
    else:
        text = str(raw)
        if len(text) > p.max_length:
            raise ValueError(f"is {len(text)} characters long; at most {p.max_length}")
        if p.pattern and not re.fullmatch(p.pattern, text):
            raise ValueError(f"`{escape(text)}` does not match the pattern {escape(p.pattern)}")
        if not p.pattern and not re.fullmatch(SAFE_TEXT, text):
            bad = next(ch for ch in text if not re.fullmatch(SAFE_TEXT, ch))
            raise ValueError(
                f"`{escape(text)}` contains `{escape(bad)}`; values may use letters, digits, spaces and "
                "_ . , : ; # @ + = / ( ) [ ] ' \" * % ! ? ~ ^ -"
            )
        return text
    if p.minimum is not None and value < p.minimum:
        raise ValueError(f"{_show(p, value)} is below the minimum {_show(p, p.minimum)}")
    if p.maximum is not None and value > p.maximum:
        raise ValueError(f"{_show(p, value)} is above the maximum {_show(p, p.maximum)}")
    return value


def describe_parameter(p: Parameter) -> str:
    """`window (duration 1m 00s–24h 00m, default 15m 00s)`: name, type, range, default."""
    kind = p.type.value
    if p.type is ParamType.ENUM:
        kind = "one of " + "|".join(p.values)
    elif p.minimum is not None or p.maximum is not None:
        low = _show(p, p.minimum) if p.minimum is not None else ""
        high = _show(p, p.maximum) if p.maximum is not None else ""
        kind += f" {low}–{high}"
    extra = ""
    if p.default is not None:
        default = _show(p, coerce(p, p.default)) if p.type is ParamType.DURATION else p.default
        extra = f", default {default}"
    elif p.required:
        extra = ", required"
    return f"{p.name} ({kind}{extra})"


def _number(raw: Any, kind: type[int] | type[float]) -> int | float:
    if isinstance(raw, bool):
        raise ValueError(f"`{raw}` is not a number")
    try:
        value = kind(raw) if kind is float else int(str(raw).strip())
    except (TypeError, ValueError, OverflowError):
        shown = escape(str(raw)[:40])
        raise ValueError(f"`{shown}` is not {'a whole number' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise ValueError(f"`{escape(str(raw))}` is not a finite number")
    return value


def _show(p: Parameter, value: Any) -> str:
    if p.type is ParamType.DURATION and value is not None:
        return format_duration(float(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
