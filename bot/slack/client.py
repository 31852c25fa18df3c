"""The one Slack Web API client factory: SLACK_API_URL honoured, 429 and 5xx retried in-process."""

from __future__ import annotations

from slack_sdk import WebClient

from bot.config import slack_api_url


def slack_client(token: str, *, rate_limit_retries: int = 4, server_error_retries: int = 3) -> WebClient:
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    return WebClient(
        token=token,
        base_url=slack_api_url(),
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
            ServerErrorRetryHandler(max_retry_count=server_error_retries),
        ],
    )
