"""The Slack-facing Lambda: verify, parse, store, ack. Slash commands and button clicks.

The signature is checked here with the current signing secret before Bolt sees the request: a
mismatch re-reads the secret once (rate-limited) and, if the request verifies with a rotated
secret, rebuilds the app with it, so a rotation needs no redeploy. Bolt verifies again.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from slack_sdk.signature import Clock, SignatureVerifier

from bot.slack.adapter import BadEvent, method_of, plain_response, to_bolt_request, to_lambda_response

STALE_SECONDS = 300  # Slack's own rule: older (or newer) requests may be replays
MAX_TIMESTAMP_DIGITS = 12


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if method_of(event) != "POST":
        return plain_response(405, "Runbook Bot takes Slack's POST requests only at this URL.")
    try:
        request = to_bolt_request(event)
    except BadEvent as error:
        return plain_response(400, str(error))
    timestamp = request.headers.get("x-slack-request-timestamp", [""])[0]
    signature = request.headers.get("x-slack-signature", [""])[0]
    if not _epoch_seconds(timestamp):
        # Unsigned or forged: slack_sdk's verifier would raise on int() and answer 500.
        return plain_response(
            401, "Not a signed Slack request (x-slack-request-timestamp must be epoch seconds)."
        )
    if abs(Clock().now() - int(timestamp)) > STALE_SECONDS:
        return plain_response(401, "Stale Slack request: its timestamp is more than 5 minutes off.")
    secrets = _current_secrets(request.raw_body, timestamp, signature)
    if secrets is None:
        return plain_response(401, "The request's Slack signature does not match.")
    return to_lambda_response(_app(secrets).dispatch(request))


def _epoch_seconds(timestamp: str) -> bool:
    """ASCII digits of a sane length: `isdigit` alone takes superscripts, which int() refuses."""
    return timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS


def _current_secrets(body: str, timestamp: str, signature: str) -> Any:
    """The secrets the request is signed with: the cached ones, else freshly read ones (a
    rotation), else None (forged, or signed with a secret we no longer hold)."""
    from bot.config import slack_secrets

    secrets = slack_secrets()
    if _signed_with(secrets.signing_secret, body, timestamp, signature):
        return secrets
    fresh = slack_secrets.reread()
    if fresh is not None and _signed_with(fresh.signing_secret, body, timestamp, signature):
        return fresh
    return None


def _signed_with(secret: str, body: str, timestamp: str, signature: str) -> bool:
    return SignatureVerifier(secret).is_valid(body, timestamp, signature)


@lru_cache(maxsize=1)
def _app(secrets: Any) -> Any:
    """Built on the first request, and again when the secrets rotate: table client, catalog loader."""
    from bot.catalog import load_catalog
    from bot.slack.app import build_app
    from bot.slack.commands import CommandService
    from bot.slack.decisions import DecisionService
    from bot.store import lean
    from bot.store.executions import ExecutionStore

    store = ExecutionStore(client=lean.dynamodb())

    def now_ms() -> int:
        return int(time.time() * 1000)

    def executor() -> Any:  # only approval clicks need it; imported then, not on the ack path
        from bot.engine.executor import Executor

        return Executor(store, load_catalog())

    commands = CommandService(store, load_catalog, now_ms)
    return build_app(
        secrets,
        commands,
        lambda client, members: DecisionService(store, load_catalog, executor, members, now_ms),
    )
