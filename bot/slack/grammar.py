"""The one parser of `/runbook` text. Pure; every bad input is a CommandError saying what is valid."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from bot.engine.starts import new_execution_id
from bot.exceptions import CommandError
from bot.store.model import ACTIVE, TERMINAL
from bot.store.model import Status as RunStatus
from bot.text import escape

__all__ = ["GRAMMAR", "new_execution_id", "parse"]

MAX_TEXT = 1000
MAX_VALUE = 256
MAX_PARAMS = 20
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
EXECUTION_ID = re.compile(r"rb-[a-z2-7]{10}")
ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}")
_QUOTES = {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u201a": "'"}

GRAMMAR = """\
`/runbook` or `/runbook start` a form to pick a runbook, a partner and its parameters
`/runbook &lt;runbook&gt; &lt;partner&gt; [key=value ...]` start a run (values may be "quoted")
`/runbook list` runbooks and partners for this channel
`/runbook help [runbook]` this help, or a runbook's steps and parameters
`/runbook status &lt;execution-id&gt;` where a run stands
`/runbook timeline &lt;execution-id&gt;` the run's timeline
`/runbook cancel &lt;execution-id&gt;` stop a run at its next step boundary
`/runbook retry &lt;execution-id&gt; [confirm=true]` resume a failed or timed-out run from its failed step
`/runbook errors [ErrorCode]` the error catalog, or one entry
`/runbook drill &lt;runbook&gt; &lt;partner&gt; [key=value ...]` a rehearsal against the drill target
`/runbook plan &lt;runbook&gt; &lt;partner&gt; [key=value ...]` a dry run: what a run would do, changing nothing
`/runbook history [partner] [runbook] [status] [since=7d]` the last runs that match, newest first
`/runbook export &lt;execution-id&gt;` the run's evidence file (Markdown + JSON) in its thread"""


@dataclass(frozen=True)
class StartRun:
    runbook: str
    partner: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drill:
    runbook: str
    partner: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanRun:
    """`/runbook plan`: a dry run with the exact effects (reads for real, changes nothing)."""

    runbook: str
    partner: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StartForm:
    """`/runbook` alone, or `/runbook start`: the start form (a modal) opens."""


@dataclass(frozen=True)
class ListCommand:
    pass


@dataclass(frozen=True)
class Help:
    runbook: str | None = None


@dataclass(frozen=True)
class Status:
    execution_id: str


@dataclass(frozen=True)
class Timeline:
    execution_id: str


@dataclass(frozen=True)
class Cancel:
    execution_id: str


@dataclass(frozen=True)
class Errors:
    code: str | None = None


@dataclass(frozen=True)
class History:
    """`names`: a partner and/or a runbook, told apart by the catalog; `statuses` empty: any."""

    names: tuple[str, ...] = ()
    statuses: frozenset[RunStatus] = frozenset()
    since_seconds: int = 7 * 86400
    partner: str | None = None  # named with partner=
    runbook: str | None = None  # named with runbook=


@dataclass(frozen=True)
class Export:
    execution_id: str


@dataclass(frozen=True)
class Retry:
    execution_id: str
    confirm: bool = False  # resume even though its on_failure steps rolled something back


Command = (
    StartForm
    | StartRun
    | Drill
    | PlanRun
    | ListCommand
    | Help
    | Status
    | Timeline
    | Cancel
    | Errors
    | History
    | Export
    | Retry
)
_BY_ID: dict[str, type[Status] | type[Timeline] | type[Cancel]] = {
    "status": Status,
    "timeline": Timeline,
    "cancel": Cancel,
}


def parse(text: str) -> Command:
    words = tokenize(text)
    if not words:
        return StartForm()
    head = words[0].lower()
    rest = words[1:]
    if head == "start" and not rest:
        return StartForm()
    if head == "list":
        _no_more(head, rest, 0)
        return ListCommand()
    if head == "help":
        _no_more(head, rest, 1)
        return Help(_name(rest[0], "runbook") if rest else None)
    if head in _BY_ID:
        if len(rest) != 1:
            raise CommandError(f"`{head}` takes one execution id, e.g. `/runbook {head} rb-abcdefghij`")
        return _BY_ID[head](execution_id(rest[0]))
    if head == "retry":
        return _retry(rest)
    if head == "errors":
        _no_more(head, rest, 1)
        if rest and not ERROR_CODE.fullmatch(rest[0]):
            raise CommandError(
                f"`{_show(rest[0])}` is not an error code; codes look like `ProvisionedThroughputExceededException`"
            )
        return Errors(rest[0] if rest else None)
    if head == "history":
        return parse_history(rest)
    if head == "export":
        if len(rest) != 1:
            raise CommandError("`export` takes one execution id, e.g. `/runbook export rb-abcdefghij`")
        return Export(execution_id(rest[0]))
    if head == "drill":
        runbook, partner, params = _run_words(rest, "drill")
        return Drill(runbook, partner, params)
    if head == "plan":
        runbook, partner, params = _run_words(rest, "plan")
        return PlanRun(runbook, partner, params)
    runbook, partner, params = _run_words(words, "")
    return StartRun(runbook, partner, params)


HISTORY_MAX_SECONDS = 90 * 86400  # runs are kept 90 days (bot.engine.machine.RETENTION_SECONDS)
HISTORY_STATUSES: dict[str, frozenset[RunStatus]] = {
    **{s.value.lower(): frozenset({s}) for s in RunStatus},
    **{s.value.lower().replace("_", "-"): frozenset({s}) for s in RunStatus},
    "canceled": frozenset({RunStatus.CANCELLED}),
    "waiting": frozenset({RunStatus.AWAITING_APPROVAL}),
    "active": ACTIVE,
    "ended": TERMINAL,
}


def parse_history(words: list[str]) -> History:
    """`[partner] [runbook] [status] [since=7d]` in any order; `partner=`, `runbook=`, `status=`
    name them explicitly. Which bare name is the partner and which the runbook is the catalog's call."""
    names: list[str] = []
    statuses: frozenset[RunStatus] | None = None
    since = 7 * 86400
    named: dict[str, str | None] = {"partner": None, "runbook": None}
    for word in words:
        key, eq, value = word.partition("=")
        key = key.lower() if eq else ""
        if eq and key not in {"since", "partner", "runbook", "status"}:
            raise CommandError(
                f"`{_show(word)}`: history takes `since=`, `partner=`, `runbook=` and `status=`, "
                "e.g. `/runbook history partner-acme throttle failed since=30d`"
            )
        if key == "since":
            since = _since(value)
            continue
        bare = (value if eq else word).strip().lower()
        if key == "status" or (not eq and bare in HISTORY_STATUSES):
            if bare not in HISTORY_STATUSES:
                raise CommandError(f"`{_show(bare)}` is not a run status; statuses: {_status_words()}")
            if statuses is not None:
                raise CommandError("name at most one status; `active` and `ended` cover several")
            statuses = HISTORY_STATUSES[bare]
            continue
        if key in named:
            if named[key] is not None:
                raise CommandError(f"`{key}=` is given twice; give it once")
            named[key] = _name(bare, key)
            continue
        names.append(_name(bare, "partner or runbook"))
    if len(names) + sum(v is not None for v in named.values()) > 2:
        raise CommandError(
            f"unexpected `{_show(names[2])}`: history takes at most a partner, a runbook, a status and "
            f"since=, e.g. `/runbook history partner-acme throttle failed since=30d`; statuses: {_status_words()}"
        )
    return History(tuple(names), statuses or frozenset(), since, named["partner"], named["runbook"])


def _since(value: str) -> int:
    from bot.engine.durations import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise CommandError(f"since={_show(value)}: {error}, e.g. since=7d") from None
    if not 60 <= seconds <= HISTORY_MAX_SECONDS:
        raise CommandError(
            f"since={_show(value)}: history goes back from 1m to 90d (runs are kept 90 days), e.g. since=7d"
        )
    return seconds


def _status_words() -> str:
    return ", ".join(
        f"`{w}`" for w in sorted(w for w in HISTORY_STATUSES if "-" not in w and w != "canceled")
    )


def tokenize(text: str) -> list[str]:
    """Shell-like words: "double" and 'single' quotes (Slack's smart quotes too), backslash escapes."""
    if len(text) > MAX_TEXT:
        raise CommandError(f"the command is {len(text)} characters long; at most {MAX_TEXT} are accepted")
    # Slack escapes &, < and > in every command's text; people typed the characters.
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    text = "".join(_QUOTES.get(ch, ch) for ch in text).replace("\u00a0", " ")
    bad = next((ch for ch in text if unicodedata.category(ch) in {"Cc", "Cf"} and ch not in " \t\n"), None)
    if bad is not None:
        raise CommandError(
            f"the command contains a control character (U+{ord(bad):04X}); remove it and try again"
        )
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote: str | None = None
    opened_at = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
                current.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "\"'":
            quote, in_word, opened_at = ch, True, i
        elif ch.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(ch)
            in_word = True
        i += 1
    if quote:
        raise CommandError(
            f"a {quote} quote is never closed: it opens at character {opened_at + 1} "
            f'(`{_show(text[opened_at:])}`); close it, e.g. note="two words"'
        )
    if in_word:
        words.append("".join(current))
    return words


def execution_id(word: str) -> str:
    value = word.strip().lower()
    if not EXECUTION_ID.fullmatch(value):
        raise CommandError(
            f"`{_show(word)}` is not an execution id; they look like `rb-` and 10 letters or digits 2–7, "
            "e.g. rb-k3j7q2m4xa (the answer that started the run names it)"
        )
    return value


def _retry(rest: list[str]) -> Retry:
    usage = "e.g. `/runbook retry rb-abcdefghij`, or `/runbook retry rb-abcdefghij confirm=true`"
    if not 1 <= len(rest) <= 2:
        raise CommandError(f"`retry` takes one execution id and optionally confirm=true, {usage}")
    confirm = False
    if len(rest) == 2:
        key, _, value = rest[1].partition("=")
        if key.lower() != "confirm" or value.lower() not in {"true", "yes"}:
            raise CommandError(
                f"`{_show(rest[1])}`: after the execution id, `retry` takes only confirm=true, {usage}"
            )
        confirm = True
    return Retry(execution_id(rest[0]), confirm)


def _run_words(words: list[str], verb: str) -> tuple[str, str, dict[str, str]]:
    prefix = f"{verb} " if verb else ""
    positional = [w for w in words if "=" not in w]
    if len(positional) < 2 or "=" in (words[0] + (words[1] if len(words) > 1 else "")):
        raise CommandError(
            f"to start a run, name a runbook and a partner: `/runbook {prefix}&lt;runbook&gt; &lt;partner&gt; [key=value ...]`, "
            f"e.g. `/runbook {prefix}throttle partner-acme`; `/runbook list` shows what this channel may run.\n"
            + GRAMMAR
        )
    if len(positional) > 2:
        raise CommandError(
            f"unexpected `{_show(positional[2])}`: after the runbook and the partner, only key=value parameters "
            'are accepted (quote values with spaces: note="two words")'
        )
    runbook = _name(words[0], "runbook")
    partner = _name(words[1], "partner")
    params: dict[str, str] = {}
    for word in words[2:]:
        key, _, value = word.partition("=")
        if not KEY.fullmatch(key):
            raise CommandError(
                f"`{_show(word)}` is not a key=value parameter: keys are lowercase letters, digits and _ "
                "(up to 32), e.g. window=30m"
            )
        if not value:
            raise CommandError(f"parameter `{key}` has no value; write {key}=&lt;value&gt;")
        if len(value) > MAX_VALUE:
            raise CommandError(
                f"the value of `{key}` is {len(value)} characters; at most {MAX_VALUE} are accepted"
            )
        if key in params:
            raise CommandError(f"parameter `{key}` is given twice; give it once")
        params[key] = value
    if len(params) > MAX_PARAMS:
        raise CommandError(f"{len(params)} parameters given; at most {MAX_PARAMS} are accepted")
    return runbook, partner, params


def _name(word: str, what: str) -> str:
    value = word.strip()
    if not NAME.fullmatch(value):
        raise CommandError(
            f"`{_show(word)}` is not a {what} name: names are lowercase letters, digits and dashes, "
            f"e.g. `throttle`, `partner-acme`; `/runbook list` shows them"
        )
    return value


def _no_more(head: str, rest: list[str], allowed: int) -> None:
    if len(rest) > allowed:
        raise CommandError(f"`{head}` takes at most {allowed} argument(s), not {len(rest)}.\n" + GRAMMAR)


def _show(word: str) -> str:
    """A user's word quoted back to them: shortened, and escaped so it can never be markup."""
    shown = word.replace("`", "'")
    return escape(shown if len(shown) <= 40 else shown[:37] + "...")
