"""Requests as Slack sends them, signed: for `runbook-bot send`, the playground, tests and benches.

Shapes follow Slack's docs: slash commands are form-encoded fields; interactivity is a form field
`payload` holding the JSON of a `block_actions` payload. Signatures are `v0=` HMAC-SHA256 of
`v0:<timestamp>:<body>` with the signing secret (Slack's "Verifying requests from Slack").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from typing import Any

DEV_SIGNING_SECRET = "dev-signing-secret-not-for-production"  # noqa: S105 - local only, documented
DEV_BOT_TOKEN = "xoxb-local-dev-token"  # noqa: S105 - the local stand-in's token
DEV_TEAM = "T0LOCAL"


def signature(secret: str, timestamp: int, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(ts),
        "x-slack-signature": signature(secret, ts, body),
    }


def slash_command_body(
    text: str,
    *,
    user_id: str,
    channel_id: str,
    user_name: str = "",
    team_id: str = DEV_TEAM,
    trigger_id: str | None = None,
    response_url: str = "",
) -> str:
    fields = {
        "token": "deprecated-verification-token",
        "team_id": team_id,
        "team_domain": "local",
        "channel_id": channel_id,
        "channel_name": channel_id.lower(),
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": "/runbook",
        "text": text,
        "api_app_id": "A0RUNBOOKBOT",
        "is_enterprise_install": "false",
        # Slack's shape; nothing local ever posts to it (the pipeline passes the stand-in's hook).
        "response_url": response_url or f"https://hooks.slack.com/commands/{team_id}/1/local",
        "trigger_id": trigger_id or f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
    }
    return urllib.parse.urlencode(fields)


def block_actions_body(
    action_id: str,
    value: str,
    *,
    user_id: str,
    channel_id: str,
    message_ts: str = "",
    team_id: str = DEV_TEAM,
    response_url: str = "",
    trigger_id: str = "",
) -> str:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "local"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": team_id},
        "api_app_id": "A0RUNBOOKBOT",
        "token": "deprecated-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "message": {"type": "message", "ts": message_ts},
        "response_url": response_url or f"https://hooks.slack.com/actions/{team_id}/1/local",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "approval",
                "text": {"type": "plain_text", "text": action_id.capitalize(), "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def event_headers(
    secret: str, body: str, *, retry_num: int = 0, timestamp: int | None = None
) -> dict[str, str]:
    """An Events API delivery's headers: JSON, signed; a retry says which (Slack's
    X-Slack-Retry-Num and X-Slack-Retry-Reason)."""
    headers = {**signed_headers(secret, body, timestamp), "content-type": "application/json"}
    if retry_num:
        headers["x-slack-retry-num"] = str(retry_num)
        headers["x-slack-retry-reason"] = "http_timeout"
    return headers


def view_submission_body(payload: dict[str, Any]) -> str:
    """A `view_submission` as Slack sends it: the form field `payload` holding its JSON."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def http_api_event(
    body: str, headers: dict[str, str], *, base64_body: bool = False, path: str = "/slack/events"
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as Lambda receives it."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {**headers, "host": "local.execute-api.localhost", "user-agent": "Slackbot 1.0"},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "local.execute-api.localhost",
            "domainPrefix": "local",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "Slackbot 1.0",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": f"POST {path}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": base64.b64encode(body.encode()).decode() if base64_body else body,
        "isBase64Encoded": base64_body,
    }
