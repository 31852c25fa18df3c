"""The Slack-facing Lambda: verify, parse, store, ack. Slash commands and button clicks."""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from bot.slack.adapter import BadEvent, method_of, plain_response, to_bolt_request, to_lambda_response


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if method_of(event) != "POST":
        return plain_response(405, "Runbook Bot takes Slack's POST requests only at this URL.")
    try:
        request = to_bolt_request(event)
    except BadEvent as error:
        return plain_response(400, str(error))
    timestamp = request.headers.get("x-slack-request-timestamp", [""])[0]
    if not timestamp.isdigit():
        # Unsigned or forged: slack_sdk's verifier would raise on int() and answer 500.
        return plain_response(
            401, "Not a signed Slack request (x-slack-request-timestamp must be epoch seconds)."
        )
    return to_lambda_response(_app().dispatch(request))


@cache
def _app() -> Any:
    """Built on the first request, once per sandbox: secrets, table client, catalog loader."""
    from bot.catalog import load_catalog
    from bot.config import slack_secrets
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
        slack_secrets(),
        commands,
        lambda client, members: DecisionService(store, load_catalog, executor, members, now_ms),
    )
