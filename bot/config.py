"""Settings from the environment (set by template.yaml). Secrets are read once per sandbox."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache

from bot.exceptions import ConfigError

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class SlackSecrets:
    signing_secret: str
    bot_token: str

    def __repr__(self) -> str:  # never let a secret reach a log through a repr
        return "SlackSecrets(signing_secret=***, bot_token=***)"


def executions_table() -> str:
    try:
        return os.environ["EXECUTIONS_TABLE"]
    except KeyError:
        raise ConfigError(
            "EXECUTIONS_TABLE is not set: it names the executions table (template.yaml sets it; "
            "`runbook-bot dev` sets it locally)"
        ) from None


def slack_api_url() -> str:
    url = os.environ.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    return url if url.endswith("/") else url + "/"


@cache
def slack_secrets() -> SlackSecrets:
    """SLACK_SIGNING_SECRET/SLACK_BOT_TOKEN when set, else the JSON secret at SLACK_SECRET_ARN."""
    signing_secret = os.environ.get("SLACK_SIGNING_SECRET")
    bot_token = os.environ.get("SLACK_BOT_TOKEN")
    if signing_secret and bot_token:
        return SlackSecrets(signing_secret, bot_token)
    secret_arn = os.environ.get("SLACK_SECRET_ARN")
    if not secret_arn:
        raise ConfigError(
            "no Slack credentials: set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN, or SLACK_SECRET_ARN "
            'to a Secrets Manager secret holding {"signing_secret": ..., "bot_token": ...}'
        )
    from bot.store.lean import secretsmanager

    raw = secretsmanager().get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        values = json.loads(raw)
        return SlackSecrets(signing_secret or values["signing_secret"], bot_token or values["bot_token"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"the secret {secret_arn} must be a JSON object with keys signing_secret and bot_token"
        ) from None
