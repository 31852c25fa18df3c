"""The one Slack Web API client factory, and what Slack's failures mean.

SLACK_API_URL is honoured. Transient failures are retried in-process within a time budget (the
function's remaining time when the handler sets it): 429 after the `Retry-After` Slack sends
(whole seconds from Slack; the local stand-in under a time scale sends decimals), 5xx and
dropped connections with exponential backoff and jitter from `SLACK_RETRY_BACKOFF_SECONDS`
(default 0.5, as slack_sdk's). A method that posts (`chat.postMessage`, `chat.postEphemeral`)
is never repeated after its answer was lost (5xx, timeout, dropped connection): Slack may have
posted it, so the caller decides (the publisher looks for it by its metadata first).
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import random
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.config import slack_api_url

CLIENT_TIMEOUT_SECONDS = 10
POSTING_METHODS = frozenset({"chat.postMessage", "chat.postEphemeral"})  # a repeat may post twice
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "request_timeout", "service_unavailable"}
)
# Errors no retry can fix: the channel, the message or the app must change first.
CHANNEL_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived", "is_inactive"})
MESSAGE_ERRORS = frozenset({"msg_too_long", "invalid_blocks", "invalid_blocks_format", "no_text"})
APP_ERRORS = frozenset(
    {"missing_scope", "token_revoked", "account_inactive", "invalid_auth", "not_authed", "ekm_access_denied"}
)
PERMANENT_ERRORS = CHANNEL_ERRORS | MESSAGE_ERRORS | APP_ERRORS
_LOST = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


class RetryBudget:
    """Until when retries may go on: the function's end, less a margin to record what happened."""

    def __init__(self, seconds: float = math.inf) -> None:
        self.until = time.monotonic() + seconds
        self.pace_until = math.inf  # how long 429s may be waited out (a publisher's allowance)

    def reset(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def allows(self, wait: float) -> bool:
        return time.monotonic() + wait < self.until

    def allows_pause(self, pause: float) -> bool:
        """Whether waiting `pause` seconds for a rate limit stays inside the pacing allowance."""
        return time.monotonic() + pause < self.pace_until

    @contextlib.contextmanager
    def capped(self, seconds: float) -> Iterator[None]:
        """Rate-limit waits inside the block total at most `seconds` (a publisher's pacing allowance)."""
        saved = self.pace_until
        self.pace_until = min(saved, time.monotonic() + seconds)
        try:
            yield
        finally:
            self.pace_until = saved


def slack_client(
    token: str,
    *,
    rate_limit_retries: int = 4,
    server_error_retries: int = 3,
    budget: RetryBudget | None = None,
) -> WebClient:
    budget = budget or RetryBudget()
    backoff = float(os.environ.get("SLACK_RETRY_BACKOFF_SECONDS", "0.5"))
    client = WebClient(
        token=token,
        base_url=slack_api_url(),
        timeout=CLIENT_TIMEOUT_SECONDS,
        retry_handlers=[
            _RateLimited(rate_limit_retries, budget),
            _Unanswered(server_error_retries, budget, backoff),
        ],
    )
    client.retry_budget = budget  # type: ignore[attr-defined]  # what its retries may take; callers cap it
    return client


def error_code(error: BaseException) -> str:
    """Slack's error code of a failed call ("" when Slack never answered)."""
    if isinstance(error, SlackApiError):
        response = error.response
        code = response.get("error") if isinstance(response.data, dict) else ""
        return str(code or (f"http_{response.status_code}" if response.status_code != 200 else ""))
    return ""


def is_permanent(error: BaseException) -> bool:
    return isinstance(error, SlackApiError) and error_code(error) in PERMANENT_ERRORS


def rate_limited(error: BaseException) -> float | None:
    """Slack's Retry-After (seconds) when it answered 429, else None."""
    if isinstance(error, SlackApiError) and error.response.status_code == 429:
        return _retry_after(error.response)
    return None


def answer_lost(error: BaseException) -> bool:
    """True when Slack may have done what was asked but its answer never arrived."""
    if isinstance(error, SlackApiError):
        return error.response.status_code >= 500
    return isinstance(error, _LOST)


def method_of(request: HttpRequest) -> str:
    return urllib.parse.urlsplit(request.url).path.rsplit("/", 1)[-1]


class _RateLimited(RetryHandler):
    """429 on any method: Slack did nothing, so waiting `Retry-After` and asking again is safe."""

    def __init__(self, max_retry_count: int, budget: RetryBudget) -> None:
        super().__init__(max_retry_count)
        self.budget = budget

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response)
        return self.budget.allows(wait + CLIENT_TIMEOUT_SECONDS) and self.budget.allows_pause(wait)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        time.sleep(_retry_after(response) * (1 + random.random() / 10))
        state.increment_current_attempt()


class _Unanswered(RetryHandler):
    """5xx, timeouts and dropped connections: retried, except for a method that posts."""

    def __init__(self, max_retry_count: int, budget: RetryBudget, backoff: float) -> None:
        super().__init__(max_retry_count)
        self.budget = budget
        self.backoff = backoff

    def _wait(self, state: RetryState) -> float:
        return float(self.backoff * (2**state.current_attempt) * (0.5 + random.random() / 2))

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        unanswered = response.status_code >= 500 if response is not None else isinstance(error, _LOST)
        if not unanswered or not self.budget.allows(self._wait(state) + CLIENT_TIMEOUT_SECONDS):
            return False
        if method_of(request) in POSTING_METHODS:
            # Only when the request surely never reached Slack.
            reason = getattr(error, "reason", error)
            return response is None and isinstance(reason, ConnectionRefusedError)
        return True

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        time.sleep(self._wait(state))
        state.increment_current_attempt()


def _retry_after(response: Any) -> float:
    for name, values in (response.headers or {}).items():
        if name.lower() == "retry-after":
            value = values[0] if isinstance(values, list) else values
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return 1.0
    return 1.0
