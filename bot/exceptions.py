"""Exceptions that can reach a person. Each message says what is wrong and what to do."""

from __future__ import annotations


class RunbookBotError(Exception):
    """Base class: the message is meant for the person who can act on it."""


class ConfigError(RunbookBotError):
    """The deployment is missing a setting or a secret."""


class CatalogError(RunbookBotError):
    """A runbook or partner file is invalid; `problems` holds one `file:line: message` each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class CommandError(RunbookBotError):
    """A `/runbook` command the bot cannot act on; the message says what is valid."""


class TransitionConflict(RunbookBotError):
    """A conditional write lost: someone else moved the execution first. Nothing was changed."""


class ClaimHeld(RunbookBotError):
    """Another writer holds the claim on the run's current version (a worker mid-step). Nothing
    was changed; whoever holds it moves the run, or its lease runs out and the sweeper does."""


class ActionError(RunbookBotError):
    """A step's action failed with a code from the error catalog (runbooks/errors.yaml)."""

    def __init__(self, code: str, message: str, *, retryable: bool | None = None) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)


class LockHeld(RunbookBotError):
    """Another active run holds a lock the run needs (a partner table, its partner+runbook);
    `holder` names it. Nothing was changed."""

    def __init__(self, holder: str, message: str = "") -> None:
        self.holder = holder
        super().__init__(message or f"execution {holder} holds a lock this run needs")


class RunExpired(RunbookBotError):
    """An ended run's retention ran out (its TTL passed, or items it needs are gone): it cannot
    be resumed. Nothing was changed."""
