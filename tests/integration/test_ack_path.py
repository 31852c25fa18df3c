"""The Slack-facing function never loads boto3: not for a command, a click or the start form.

import-linter checks the layers statically; this checks what a cold sandbox really imports while it
answers, lazy imports included, in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys
from bot.local.lambda_context import LambdaContext
from bot.local.slack_requests import (
    DEV_SIGNING_SECRET, block_actions_body, http_api_event, signed_headers, slash_command_body,
)
from bot.handlers import ingress

ctx = LambdaContext("IngressFunction", timeout_seconds=10)
answers = []
body = slash_command_body("throttle partner-acme", user_id="U0DEVONCALL", channel_id="C0ACMEOPS", trigger_id="t1")
answers.append(ingress.handler(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body)), ctx))
value = json.dumps({"execution_id": "rb-waitingrun", "step_id": "mitigate", "version": 3})
for user, action in (("U0DEVONCALL", "approve"), ("U0ACMELEAD", "reject")):
    body = block_actions_body(action, value, user_id=user, channel_id="C0ACMEOPS", message_ts="")
    answers.append(ingress.handler(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body)), ctx))
# The start form: opened (the parent's stand-in issued the trigger), a pick, a submission.
import os
from bot.local.slack_requests import view_submission_body
from bot.slack.start_form import PARTNER_BLOCK, RUNBOOK_BLOCK, START_CALLBACK, metadata
body = slash_command_body("", user_id="U0DEVONCALL", channel_id="C0ACMEOPS", trigger_id=os.environ["FORM_TRIGGER"])
answers.append(ingress.handler(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body)), ctx))
picked = {
    RUNBOOK_BLOCK: {RUNBOOK_BLOCK: {"type": "static_select", "selected_option": {"value": "throttle"}}},
    PARTNER_BLOCK: {PARTNER_BLOCK: {"type": "static_select", "selected_option": {"value": "partner-acme"}}},
}
form = {"id": "V0FORM", "hash": "1.a", "callback_id": START_CALLBACK, "private_metadata": metadata("C0ACMEOPS"),
        "type": "modal", "blocks": [], "state": {"values": picked}}
user = {"id": "U0DEVONCALL", "team_id": "T0LOCAL"}
for payload in (
    {"type": "block_actions", "user": user, "team": {"id": "T0LOCAL"}, "view": form, "trigger_id": "1.2.ab",
     "actions": [{"type": "static_select", "action_id": PARTNER_BLOCK, "block_id": PARTNER_BLOCK,
                  "selected_option": {"value": "partner-acme"}}]},
    {"type": "view_submission", "user": user, "team": {"id": "T0LOCAL"}, "view": form, "trigger_id": "1.3.cd"},
):
    body = view_submission_body(payload)
    answers.append(ingress.handler(http_api_event(body, signed_headers(DEV_SIGNING_SECRET, body)), ctx))
print(json.dumps({
    "statuses": [a["statusCode"] for a in answers],
    "last": answers[-1].get("body"),
    "loaded": sorted(m for m in ("boto3", "botocore", "moto") if m in sys.modules),
}))
"""


def test_commands_clicks_and_the_start_form_are_answered_without_loading_boto3():
    from bot.local.aws import EmbeddedAws
    from bot.local.slack_api import SlackStandIn
    from bot.local.slack_requests import DEV_BOT_TOKEN, DEV_SIGNING_SECRET
    from bot.local.template import create_tables, load_template
    from bot.store.codec import to_item
    from bot.store.executions import ExecutionStore
    from bot.store.model import Status

    with EmbeddedAws(engine="moto") as aws:
        tables = create_tables(aws.client("dynamodb"), load_template(), lambda lid: f"ack-{lid}")
        aws.client("dynamodb").put_item(TableName=tables["ExecutionsTable"], Item=to_item(waiting_run()))
        slack = SlackStandIn(token=DEV_BOT_TOKEN)
        # The trigger is minted before the child interpreter even starts, and the child answers
        # three requests before the form's: Slack's 3 s are measured by bench/ack.py (cold and
        # warm), not here, where a loaded CI machine once took longer than that to get there.
        slack.trigger_seconds = 120.0
        try:
            env = {
                **os.environ,
                **aws.env(),
                "EXECUTIONS_TABLE": tables["ExecutionsTable"],
                "SLACK_API_URL": slack.start(),
                "SLACK_SIGNING_SECRET": DEV_SIGNING_SECRET,
                "SLACK_BOT_TOKEN": DEV_BOT_TOKEN,
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "FORM_TRIGGER": (form_trigger := slack.trigger("U0DEVONCALL")),
            }
            out = subprocess.run(
                [sys.executable, "-c", CHILD],
                check=False,
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            opened = [c for c in slack.calls if c.args.get("trigger_id") == form_trigger]
        finally:
            slack.stop()
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
        store = ExecutionStore(aws.client("dynamodb"), tables["ExecutionsTable"])
        decided = store.get("rb-waitingrun")
    assert report["statuses"] == [200] * 6
    assert [(c.method, c.ok) for c in opened] == [("views.open", True)], "the start form opened"
    # The command above holds the orders table's lock: the form's run meets it, as a command would.
    assert "is already running on a table this run would change" in report["last"]
    assert report["loaded"] == [], f"the ack path loaded {report['loaded']}"
    assert decided.status is Status.FAILED and decided.error["by"] == "U0ACMELEAD", (
        "the rejection was decided"
    )


def waiting_run():
    import dataclasses

    from bot.catalog import load_catalog
    from bot.engine.starts import new_execution
    from bot.store.model import Approval, Status

    catalog = load_catalog()
    ex = new_execution(
        "rb-waitingrun",
        catalog.runbooks["throttle"],
        catalog.partners["partner-acme"],
        {"table": "orders", "window": 900, "mode": "on-demand", "write_units": 200},
        requested_by="U0DEVONCALL",
        channel="C0ACMEOPS",
        now_ms=1_795_000_000_000,
        trigger="slash",
    )
    now = int(time.time() * 1000)
    return dataclasses.replace(
        ex,
        status=Status.AWAITING_APPROVAL,
        version=3,
        cursor="mitigate",
        approval=Approval("mitigate", now, now + 1_800_000, "changes acme-orders to on-demand"),
    )
