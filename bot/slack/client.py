"""The one Slack Web API client factory: SLACK_API_URL honoured, 429 and 5xx retried in-process.

Retries back off exponentially with jitter from `SLACK_RETRY_BACKOFF_SECONDS` (default 0.5, as
slack_sdk's); 429s wait at least the `Retry-After` Slack sends.
"""

from __future__ import annotations

import os

from slack_sdk import WebClient

from bot.config import slack_api_url


def slack_client(token: str, *, rate_limit_retries: int = 4, server_error_retries: int = 3) -> WebClient:
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

    backoff = BackoffRetryIntervalCalculator(float(os.environ.get("SLACK_RETRY_BACKOFF_SECONDS", "0.5")))

    return WebClient(
        token=token,
        base_url=slack_api_url(),
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=backoff),
            RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries, interval_calculator=backoff),
            ServerErrorRetryHandler(max_retry_count=server_error_retries, interval_calculator=backoff),
        ],
    )
