"""The one duration syntax: `90s`, `15m`, `2h`, `1h30m`, `1d`, or plain seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> int:
    """Whole seconds; ValueError with what is valid otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or like 90s, 15m, 2h, 1h30m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(value)
    text = str(value).strip().lower()
    if text.isdigit():
        return int(text)
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"`{value}` is not a duration; write e.g. 90s, 15m, 2h or 1h30m")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Human-readable: `45s`, `1m 05s`, `2h 03m`, `3d 4h`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
