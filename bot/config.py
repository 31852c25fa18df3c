"""Settings from the environment (set by template.yaml). Slack's secrets are cached with a TTL by
a `SecretCache`, which each function's services object holds (bot/handlers/services.py)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.exceptions import ConfigError

logger = logging.getLogger(__name__)
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
SECRET_TTL_SECONDS = 300  # a rotated secret is picked up within this, without a redeploy
REREAD_MIN_SECONDS = 30  # a failed signature re-reads the secret at most this often (forgeries are cheap)


@dataclass(frozen=True)
class SlackSecrets:
    signing_secret: str
    bot_token: str

    def __repr__(self) -> str:  # never let a secret reach a log through a repr
        return "SlackSecrets(signing_secret=***, bot_token=***)"


def slack_api_url() -> str:
    url = os.environ.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    return url if url.endswith("/") else url + "/"


def positive_setting(name: str, default: float) -> float:
    """A positive number from the environment variable `name`, `default` when it is unset."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} is not valid: it must be a positive number (default {default:g})")
    return value


def slack_posts_per_second() -> float:
    """Posts per second Slack takes in one channel, sustained ("about one"): a busy channel's
    runs take turns at this pace (`SLACK_POSTS_PER_SECOND`; the local pipeline sets it to match a
    stand-in whose clock runs fast)."""
    return positive_setting("SLACK_POSTS_PER_SECOND", 1.0)


def sweep_every_seconds() -> float:
    """How often the sweeper is scheduled (`SWEEP_EVERY_SECONDS`, template.yaml: 60, as its
    rate(1 minute)); within one period it nudges each waiting timeline when its turn comes."""
    return positive_setting("SWEEP_EVERY_SECONDS", 60.0)


def read_slack_secrets() -> SlackSecrets:
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


class SecretCache:
    """Slack's secrets for this sandbox: read on first use, again once `ttl` has passed, and on
    demand (`reread`, after a signature failure) at most once per `min_interval`."""

    def __init__(
        self,
        read: Callable[[], SlackSecrets],
        *,
        ttl: float = SECRET_TTL_SECONDS,
        min_interval: float = REREAD_MIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read, self.ttl, self.min_interval, self.clock = read, ttl, min_interval, clock
        self._secrets: SlackSecrets | None = None
        self._read_at = self._reread_at = -float("inf")
        self._lock = threading.Lock()

    def __call__(self) -> SlackSecrets:
        with self._lock:
            if self._secrets is None:
                self._load()
            elif self.clock() - self._read_at >= self.ttl:
                try:
                    self._load()
                except Exception:  # Secrets Manager unreachable: keep what works, ask again soon
                    logger.warning(
                        "could not re-read the Slack secret; keeping the cached one", exc_info=True
                    )
                    self._read_at = self.clock() - self.ttl + self.min_interval
            assert self._secrets is not None
            return self._secrets

    def reread(self) -> SlackSecrets | None:
        """The secrets read again now, or None when the last re-read was too recent to ask again."""
        with self._lock:
            if self.clock() - self._reread_at < self.min_interval:
                return None
            self._reread_at = self.clock()
            self._load()
            return self._secrets

    def cache_clear(self) -> None:
        """Forget them, as a new sandbox would."""
        with self._lock:
            self._secrets, self._read_at, self._reread_at = None, -float("inf"), -float("inf")

    def _load(self) -> None:
        self._secrets = self.read()
        self._read_at = self.clock()
