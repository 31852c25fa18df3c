"""The start form through the local pipeline: `/runbook` opens it with the command's trigger_id
(views.open on the strict stand-in), picks update it (block_actions -> views.update with the
view's hash), a bad value comes back under its field, a good submission starts the run in the
channel the form was opened from."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.slack.start_form import PARTNER_BLOCK, RUNBOOK_BLOCK

pytestmark = pytest.mark.integration

ACME = "C0ACMEOPS"
GLOBEX = "C0GLOBEXOPS"
USER = "U0DEVONCALL"
WRITE_UNITS = "param.throttle.partner-acme.write_units"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(PipelineOptions(engine="moto", sweep_interval=0.3)) as running:
        import boto3

        from bot.demo import seed_demo

        seed_demo(boto3.session.Session())
        yield running


@pytest.fixture(autouse=True)
def no_open_views(pipeline: LocalPipeline) -> Iterator[None]:
    yield
    for view in pipeline.slack.open_views():
        pipeline.slack.close_view(view["id"])


def open_form(pipeline: LocalPipeline, channel: str = ACME, user: str = USER) -> dict:
    answer = pipeline.command("", user_id=user, channel_id=channel)
    assert answer["statusCode"] == 200
    assert not (answer.get("body") or "").strip(), answer["body"]  # acked empty: the form is the answer
    (view,) = pipeline.slack.open_views(user)
    return view


def pick(pipeline: LocalPipeline, view: dict, block_id: str, value: str, user: str = USER) -> dict:
    assert pipeline.choose(view["id"], block_id, value)["statusCode"] == 200
    (updated,) = pipeline.slack.open_views(user)
    return updated


def block(view: dict, block_id: str) -> dict:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


def options(view: dict, block_id: str) -> list[str]:
    return [o["value"] for o in block(view, block_id)["element"]["options"]]


def test_form_opens_updates_refuses_a_bad_value_and_starts_the_run_in_its_channel(pipeline):
    view = open_form(pipeline)
    assert json.loads(view["private_metadata"]) == {"channel": ACME}
    assert "throttle" in options(view, RUNBOOK_BLOCK)
    assert not any(b.get("block_id") == PARTNER_BLOCK for b in view["blocks"])

    view = pick(pipeline, view, RUNBOOK_BLOCK, "throttle")
    assert options(view, PARTNER_BLOCK) == ["partner-acme"]  # globex runs only in its own channel
    view = pick(pipeline, view, PARTNER_BLOCK, "partner-acme")
    units = block(view, WRITE_UNITS)["element"]
    assert (units["type"], units["max_value"], units["initial_value"]) == ("number_input", "2000", "200")
    assert block(view, "param.throttle.partner-acme.table")["element"]["initial_option"]["value"] == "orders"
    assert "mitigate" in json.dumps(view["blocks"])  # the steps needing approval are named
    updates = [c for c in pipeline.slack.calls if c.method == "views.update"]
    assert len(updates) == 2 and all(c.ok and c.args.get("hash") for c in updates)

    before = len(pipeline.slack.calls)
    result = pipeline.submit_view(view["id"], {WRITE_UNITS: "5000"})
    assert result["answer"]["response_action"] == "errors"
    assert "above partner-acme's limit" in result["answer"]["errors"][WRITE_UNITS]
    assert (
        result["view"]["errors"] == result["answer"]["errors"]
    )  # the form stays open, error under the field
    assert not [c for c in pipeline.slack.calls[before:] if c.method == "chat.postEphemeral"]

    result = pipeline.submit_view(view["id"], {WRITE_UNITS: "300"})
    assert result["view"] == {}  # closed
    (told,) = [c for c in pipeline.slack.calls[before:] if c.method == "chat.postEphemeral"]
    assert (told.args["channel"], told.args["user"], told.ok) == (ACME, USER, True)
    execution_id = re.search(r"rb-[a-z2-7]{10}", told.args["text"]).group(0)
    ex = pipeline.execution(execution_id)
    assert (ex.runbook, ex.partner, ex.channel, ex.requested_by) == ("throttle", "partner-acme", ACME, USER)
    assert ex.params["write_units"] == 300 and ex.params["table"] == "orders"


def test_a_partner_not_allowed_in_the_forms_channel_is_refused_under_its_field(pipeline):
    view = open_form(pipeline, GLOBEX, "U0GLOBEXLEAD")
    view = pick(pipeline, view, RUNBOOK_BLOCK, "throttle", "U0GLOBEXLEAD")
    assert options(view, PARTNER_BLOCK) == ["partner-globex"]
    with pytest.raises(ValueError):  # Slack offers only the form's options
        pipeline.slack.choose(view["id"], PARTNER_BLOCK, "partner-acme")
    # The form of a channel acme allows, its partner's channels changed before the submit: the
    # submission is checked again, against the channel the form came from.
    view = pick(pipeline, open_form(pipeline), RUNBOOK_BLOCK, "throttle")
    view = pick(pipeline, view, PARTNER_BLOCK, "partner-acme")
    pipeline.slack.views[view["id"]]["private_metadata"] = json.dumps({"channel": GLOBEX})
    result = pipeline.submit_view(view["id"], {})
    assert "run in #C0ACMEOPS" in result["answer"]["errors"][PARTNER_BLOCK]


def test_an_expired_trigger_says_so_and_how_to_start_without_the_form(pipeline):
    stale = pipeline.slack.trigger(USER, age=5)
    answer = pipeline.command("start", user_id=USER, channel_id=ACME, trigger_id=stale)
    text = json.loads(answer["body"])["text"]
    assert "expired_trigger_id" in text and "3 seconds" in text and "/runbook &lt;runbook&gt;" in text
    assert pipeline.slack.open_views(USER) == []


def test_a_stale_pick_loses_to_the_newer_one(pipeline):
    """Two picks racing: the second views.update carries the hash the first one replaced, and
    Slack refuses it (hash_conflict); the form shows the pick that landed first."""
    view = open_form(pipeline)
    pick(pipeline, view, RUNBOOK_BLOCK, "throttle")
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    from bot.local.slack_requests import DEV_BOT_TOKEN

    client = WebClient(token=DEV_BOT_TOKEN, base_url=pipeline.slack.base_url)
    client.retry_handlers = []
    stale = {"type": "modal", "title": {"type": "plain_text", "text": "Stale"}, "blocks": view["blocks"]}
    with pytest.raises(SlackApiError) as refused:
        client.views_update(view_id=view["id"], hash=view["hash"], view=stale)
    assert refused.value.response["error"] == "hash_conflict"
    (shown,) = pipeline.slack.open_views(USER)
    assert PARTNER_BLOCK in {b.get("block_id") for b in shown["blocks"]}  # the first pick's form stands
    with pytest.raises(SlackApiError) as missing:
        client.views_update(view_id="V0NOSUCHVIEW", view=stale)
    assert missing.value.response["error"] == "not_found"


def test_a_run_started_where_slack_refuses_the_ephemeral_says_so_in_the_form(pipeline):
    """The bot was removed from the channel: chat.postEphemeral answers not_in_channel, so the
    form, instead of closing on nothing, turns into "Run started" with the execution id."""
    view = pick(pipeline, open_form(pipeline), RUNBOOK_BLOCK, "consistency")  # reads: takes no lock
    view = pick(pipeline, view, PARTNER_BLOCK, "partner-acme")
    pipeline.slack.remove(ACME)
    try:
        result = pipeline.submit_view(view["id"], {"param.consistency.partner-acme.sample": "20"})
    finally:
        pipeline.slack.invite(ACME)
    assert result["view"]["title"]["text"] == "Run started"
    text = json.dumps(result["view"]["blocks"])
    assert "Started `consistency` for `partner-acme`" in text
    ex = pipeline.execution(re.search(r"rb-[a-z2-7]{10}", text).group(0))
    assert (ex.channel, ex.params["sample"]) == (ACME, 20)
