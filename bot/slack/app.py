"""The Bolt app: verifies every request (signature, 5-minute timestamp), then small listeners.

No Slack call happens at import, init or first request: `authorize` hands Bolt the bot token
directly instead of letting it call `auth.test`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

from bot.config import SlackSecrets
from bot.slack.client import slack_client
from bot.slack.commands import CommandService, Invocation
from bot.slack.decisions import DecisionService

logger = logging.getLogger(__name__)
GROUP_CACHE_SECONDS = 300


def build_app(
    secrets: SlackSecrets,
    commands: CommandService,
    decisions: Callable[[WebClient], DecisionService],
) -> App:
    client = slack_client(secrets.bot_token)
    # Bolt warns that SLACK_BOT_TOKEN is unused when `authorize` is given: that is the point.
    bolt_logger = logging.getLogger("bot.slack.bolt")
    bolt_logger.setLevel(logging.ERROR)

    def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=secrets.bot_token)

    app = App(
        signing_secret=secrets.signing_secret,
        client=client,
        authorize=authorize,
        process_before_response=True,
        request_verification_enabled=True,
        token_verification_enabled=False,
        url_verification_enabled=True,
        ssl_check_enabled=True,
        logger=bolt_logger,
    )
    decider = decisions(client)

    @app.command("/runbook")
    def runbook_command(ack: Ack, command: dict[str, Any]) -> None:
        try:
            message = commands.answer(Invocation.from_payload(command))
        except Exception:
            logger.exception("runbook command failed", extra={"text": command.get("text")})
            ack(
                response_type="ephemeral",
                text="Runbook Bot hit an internal error; nothing was started. Try again.",
            )
            return
        ack(response_type="ephemeral", text=message.text, blocks=message.blocks)

    @app.action("approve")
    @app.action("reject")
    def approval_click(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
        ack()
        user_id = str((body.get("user") or {}).get("id") or "")
        channel = str(
            (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
        )
        result = decider.decide(
            user_id, str(action.get("value") or ""), approve=action.get("action_id") == "approve"
        )
        if not result.decided and channel and user_id:
            client.chat_postEphemeral(channel=channel, user=user_id, text=result.explanation)

    return app


def group_members(client: WebClient) -> Callable[[str], frozenset[str]]:
    """Members of a Slack user group, cached per sandbox for a few minutes."""
    cache: dict[str, tuple[float, frozenset[str]]] = {}

    def members_of(group_id: str) -> frozenset[str]:
        hit = cache.get(group_id)
        if hit and time.monotonic() - hit[0] < GROUP_CACHE_SECONDS:
            return hit[1]
        users = frozenset(client.usergroups_users_list(usergroup=group_id).get("users") or [])
        cache[group_id] = (time.monotonic(), users)
        return users

    return members_of
