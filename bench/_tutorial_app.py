"""The baseline for bench/ack.py: a Bolt app as the Bolt-on-Lambda tutorial writes it.

App with token and signing secret, `process_before_response=True`, a boto3 resource `put_item`,
`ack()`, behind Bolt's own AWS Lambda adapter. Only change: the Slack client points at the local
stand-in (SLACK_API_URL), since Slack itself is not reachable here.
"""

from __future__ import annotations

import os

import boto3
from slack_bolt import App
from slack_bolt.adapter.aws_lambda import SlackRequestHandler
from slack_sdk import WebClient

app = App(
    process_before_response=True,
    signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    client=WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
)
table = boto3.resource("dynamodb").Table(os.environ["EXECUTIONS_TABLE"])


@app.command("/runbook")
def runbook(ack, command):  # type: ignore[no-untyped-def]
    table.put_item(
        Item={
            "pk": f"TUTORIAL#{command['trigger_id']}",
            "sk": "STATE",
            "text": command["text"],
            "user": command["user_id"],
        }
    )
    ack(f"Started: {command['text']}")


def handler(event, context):  # type: ignore[no-untyped-def]
    return SlackRequestHandler(app=app).handle(event, context)
