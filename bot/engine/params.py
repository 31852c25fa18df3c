"""Binding a run's parameters: runbook defaults, then the partner's overrides, then the user's."""

from __future__ import annotations

import difflib
import re
from typing import Any

from bot.engine.durations import format_duration, parse_duration
from bot.engine.model import Parameter, ParamType, Runbook
from bot.exceptions import CommandError
from bot.partners.model import Partner

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def bind_parameters(runbook: Runbook, partner: Partner, given: dict[str, str]) -> dict[str, Any]:
    """Typed values for every parameter, or a CommandError listing every problem at once."""
    problems: list[str] = []
    known = {p.name: p for p in runbook.parameters}
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            problems.append(f"unknown parameter `{key}`" + (f"; did you mean `{close[0]}`?" if close else ""))
    values: dict[str, Any] = {}
    overrides = partner.overrides.get(runbook.name, {})
    for p in runbook.parameters:
        raw: Any = given.get(p.name, overrides.get(p.name, p.default))
        if raw is None:
            if p.required:
                problems.append(f"`{p.name}` is required ({describe_parameter(p)})")
            continue
        try:
            values[p.name] = coerce(p, raw)
        except ValueError as error:
            source = (
                "given" if p.name in given else ("partner override" if p.name in overrides else "default")
            )
            problems.append(f"`{p.name}` ({source}): {error}")
    if problems:
        listing = "; ".join(describe_parameter(p) for p in runbook.parameters) or "none"
        raise CommandError("; ".join(problems) + f".\nParameters of {runbook.name}: {listing}")
    return values


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
            raise ValueError(f"`{raw}` is not true or false (yes/no, 1/0 also work)")
        return text in _TRUE
    elif p.type is ParamType.DURATION:
        value = parse_duration(raw)
    elif p.type is ParamType.ENUM:
        text = str(raw)
        if text not in p.values:
            raise ValueError(f"`{text}` is not one of {', '.join(p.values)}")
        return text
    else:
        text = str(raw)
        if len(text) > p.max_length:
            raise ValueError(f"is {len(text)} characters long; at most {p.max_length}")
        if p.pattern and not re.fullmatch(p.pattern, text):
            raise ValueError(f"`{text}` does not match the pattern {p.pattern}")
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
        return kind(raw) if kind is float else int(str(raw).strip())
    except (TypeError, ValueError):
        raise ValueError(f"`{raw}` is not {'a whole number' if kind is int else 'a number'}") from None


def _show(p: Parameter, value: Any) -> str:
    if p.type is ParamType.DURATION and value is not None:
        return format_duration(float(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
