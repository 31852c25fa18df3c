"""Slack secrets rotate without a redeploy; forged requests cannot make the ingress hammer Secrets
Manager or answer 500."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from bot.config import SecretCache, SlackSecrets
from bot.local.slack_requests import DEV_BOT_TOKEN, http_api_event, signed_headers, slash_command_body

OLD = "signing-secret-before-rotation"
NEW = "signing-secret-after-rotation"


@pytest.fixture
def secret(server_table, moto_server, monkeypatch):
    """The Slack secret in (moto's) Secrets Manager, as deployed: no secret in the environment."""
    from bot.local.pipeline import fresh_sandboxes

    manager = moto_server.client("secretsmanager")
    arn = manager.create_secret(
        Name=f"runbook-bot-slack-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"signing_secret": OLD, "bot_token": DEV_BOT_TOKEN}),
    )["ARN"]
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_SECRET_ARN", arn)
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api/")  # nothing listens: no call may be made

    def rotate(signing_secret: str) -> None:
        manager.put_secret_value(
            SecretId=arn,
            SecretString=json.dumps({"signing_secret": signing_secret, "bot_token": DEV_BOT_TOKEN}),
        )

    fresh_sandboxes()
    yield rotate
    fresh_sandboxes()


def listing(signing_secret: str, *, timestamp: str | None = None) -> dict:
    body = slash_command_body("list", user_id="U0DEVONCALL", channel_id="C0ACMEOPS", trigger_id="1.2.3")
    headers = signed_headers(signing_secret, body)
    if timestamp is not None:
        headers["x-slack-request-timestamp"] = timestamp
    return http_api_event(body, headers)


def status(event: dict) -> int:
    from bot.handlers import ingress

    return int(ingress.handler(event, None)["statusCode"])


def test_a_rotated_signing_secret_is_accepted_without_a_redeploy(secret):
    assert status(listing(OLD)) == 200
    secret(NEW)
    assert status(listing(NEW)) == 200  # the first failure re-read the secret and rebuilt the app
    assert status(listing(NEW)) == 200


def test_the_old_secret_stops_working_once_the_new_one_is_read(secret, monkeypatch):
    from bot.handlers import ingress

    monkeypatch.setattr(ingress.SANDBOX().secrets, "min_interval", 0)
    assert status(listing(OLD)) == 200
    secret(NEW)
    assert status(listing(NEW)) == 200
    assert status(listing(OLD)) == 401


def test_forged_requests_re_read_the_secret_at_most_once_per_interval(secret, monkeypatch):
    from bot.handlers import ingress

    reads = []
    secrets = ingress.SANDBOX().secrets
    read = secrets.read
    monkeypatch.setattr(secrets, "read", lambda: reads.append(1) or read())
    assert status(listing(OLD)) == 200
    for _ in range(10):
        assert status(listing("a-forger-guessing")) == 401
    assert len(reads) == 2  # the first request, then one re-read for the first forgery


@pytest.mark.parametrize(
    "timestamp",
    ["¹⁷⁰⁰⁰⁰⁰⁰⁰⁰", "١٧٠٠٠٠٠٠٠٠", "9" * 5000, "-1700000000", "1700000000.5", ""],
    ids=["superscript digits", "arabic-indic digits", "5000 digits", "negative", "fraction", "missing"],
)
def test_a_timestamp_that_is_not_ascii_epoch_seconds_is_401_never_500(secret, timestamp):
    assert status(listing(OLD, timestamp=timestamp)) == 401


def test_a_stale_request_is_401_without_re_reading_the_secret(secret, monkeypatch):
    from bot.handlers import ingress

    reads = []
    secrets = ingress.SANDBOX().secrets
    read = secrets.read
    monkeypatch.setattr(secrets, "read", lambda: reads.append(1) or read())
    assert status(listing(OLD, timestamp=str(int(time.time()) - 301))) == 401
    assert reads == []


def test_cached_secrets_are_read_again_after_their_ttl():
    now = [0.0]
    values = iter([SlackSecrets("one", "xoxb-1"), SlackSecrets("two", "xoxb-2")])
    cache = SecretCache(lambda: next(values), ttl=300, min_interval=30, clock=lambda: now[0])
    assert cache().signing_secret == "one"
    now[0] = 299
    assert cache().signing_secret == "one"
    now[0] = 300
    assert cache().signing_secret == "two"


def test_a_re_read_is_allowed_at_once_then_refused_within_the_interval():
    now = [0.0]
    values = iter([SlackSecrets(name, "xoxb") for name in ("one", "two", "three")])
    cache = SecretCache(lambda: next(values), ttl=300, min_interval=30, clock=lambda: now[0])
    cache()
    now[0] = 1
    assert cache.reread() == SlackSecrets("two", "xoxb")  # a rotation right after a cold start
    now[0] = 30
    assert cache.reread() is None
    now[0] = 31
    assert cache.reread() == SlackSecrets("three", "xoxb")


def test_a_secrets_manager_outage_after_the_ttl_keeps_the_cached_secrets():
    now = [0.0]
    answers = [SlackSecrets("one", "xoxb-1")]

    def read() -> SlackSecrets:
        if not answers:
            raise ConnectionError("Secrets Manager is unreachable")
        return answers.pop()

    cache = SecretCache(read, ttl=300, min_interval=30, clock=lambda: now[0])
    cache()
    now[0] = 301
    assert cache().signing_secret == "one"
