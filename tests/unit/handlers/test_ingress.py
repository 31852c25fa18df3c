"""The Slack-facing handler on HttpApi events: verify, store with a conditional write, ack."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from bot.local.slack_requests import (
    DEV_BOT_TOKEN,
    DEV_SIGNING_SECRET,
    http_api_event,
    signed_headers,
    slash_command_body,
)
from bot.store import keys

CONTEXT = None


@pytest.fixture
def ingress(server_table, monkeypatch):
    from bot.local.pipeline import fresh_sandboxes

    monkeypatch.setenv("SLACK_SIGNING_SECRET", DEV_SIGNING_SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEV_BOT_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api/")  # nothing listens: no call may be made
    fresh_sandboxes()
    from bot.handlers import ingress as module

    yield module
    fresh_sandboxes()


def state_items(table: str) -> list[dict]:
    return [
        i for i in boto3.client("dynamodb").scan(TableName=table)["Items"] if i["sk"]["S"] == keys.STATE_SK
    ]


def command(
    text: str,
    *,
    secret: str = DEV_SIGNING_SECRET,
    timestamp: int | None = None,
    base64_body=False,
    trigger_id: str = "13345224609.738474920.8088930838d88f008e0",
    user_id="U0DEVONCALL",
    channel_id="C0ACMEOPS",
):
    body = slash_command_body(text, user_id=user_id, channel_id=channel_id, trigger_id=trigger_id)
    return http_api_event(body, signed_headers(secret, body, timestamp), base64_body=base64_body)


@pytest.mark.parametrize("base64_body", [False, True])
def test_signed_start_acks_with_execution_id_and_writes_one_pending_item(ingress, server_table, base64_body):
    response = ingress.handler(command("throttle partner-acme", base64_body=base64_body), CONTEXT)
    assert response["statusCode"] == 200
    text = json.loads(response["body"])["text"]
    execution_id = text.split("execution `")[1].split("`")[0]
    items = state_items(server_table)
    assert len(items) == 1
    item = items[0]
    assert item["execution_id"]["S"] == execution_id
    assert item["status"]["S"] == "PENDING" and item["version"]["N"] == "0"
    assert item["runbook"]["S"] == "throttle" and item["partner"]["S"] == "partner-acme"
    assert item["requested_by"]["S"] == "U0DEVONCALL"


def test_redelivered_request_starts_no_second_run(ingress, server_table):
    first = ingress.handler(command("throttle partner-acme"), CONTEXT)
    again = ingress.handler(command("throttle partner-acme"), CONTEXT)
    assert first["statusCode"] == again["statusCode"] == 200
    assert json.loads(first["body"])["text"] == json.loads(again["body"])["text"]
    assert len(state_items(server_table)) == 1


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(lambda: command("throttle partner-acme", secret="not-the-secret"), id="forged"),
        pytest.param(lambda: command("throttle partner-acme", timestamp=int(time.time()) - 301), id="stale"),
        pytest.param(
            lambda: {
                **command("throttle partner-acme"),
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            id="unsigned",
        ),
    ],
)
def test_forged_stale_and_unsigned_requests_get_401_and_write_nothing(ingress, server_table, event):
    response = ingress.handler(event(), CONTEXT)
    assert response["statusCode"] == 401
    assert state_items(server_table) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("throttle partner-nobody", "partners: partner-acme, partner-globex"),
        ("thrott partner-acme", "runbooks: consistency, incomplete-results, replay, throttle, timeout"),
        ("throttle partner-acme windw=5m", "did you mean `window`"),
        ("throttle partner-acme window=5 years", "unexpected"),
        ("throttle partner-acme window=10s", "below the minimum"),
        ("throttle partner-acme mode=fast", "not one of on-demand, provisioned"),
        ('throttle partner-acme note="unclosed', "never closed"),
        ("status rb-nothereaaa", "no execution `rb-nothereaaa`"),
        ("status 42", "is not an execution id"),
        ("cancel", "takes one execution id"),
    ],
)
def test_bad_commands_get_200_with_what_is_valid_and_start_nothing(ingress, server_table, text, expected):
    response = ingress.handler(command(text), CONTEXT)
    assert response["statusCode"] == 200
    assert expected in json.loads(response["body"])["text"]
    assert state_items(server_table) == []


def test_partner_channel_restriction_says_where_to_go(ingress, server_table):
    response = ingress.handler(command("throttle partner-acme", channel_id="C0RANDOM"), CONTEXT)
    assert "<#C0ACMEOPS>" in json.loads(response["body"])["text"]
    assert state_items(server_table) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("list", "partner-acme"),
        ("help", "/runbook &lt;runbook&gt; &lt;partner&gt;"),
        ("help throttle", "needs approval"),
        ("errors", "ProvisionedThroughputExceededException"),
        ("errors ConditionalCheckFailedException", "duplicate"),
    ],
)
def test_read_only_commands_answer_from_the_catalog(ingress, text, expected):
    response = ingress.handler(command(text), CONTEXT)
    assert response["statusCode"] == 200
    assert expected in json.loads(response["body"])["text"]


def test_non_post_and_bad_base64_are_refused_clearly(ingress):
    event = command("list")
    event["requestContext"]["http"]["method"] = "GET"
    assert ingress.handler(event, CONTEXT)["statusCode"] == 405
    broken = {**command("list"), "isBase64Encoded": True, "body": "%%%not-base64"}
    response = ingress.handler(broken, CONTEXT)
    assert response["statusCode"] == 400 and "base64" in response["body"]
