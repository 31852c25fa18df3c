"""`/runbook history` and `/runbook export` end to end: real stream records, the timeline consumer,
the strict Slack stand-in (its file upload flow included), on moto and on DynamoDB Local."""

from __future__ import annotations

import json
import time

import pytest

from bot.slack import history
from bot.store.model import Status

from .test_pipeline import ACME, approve, channel_thread, start

pytestmark = pytest.mark.integration

GLOBEX = "C0GLOBEXOPS"


def answer(pipeline, text: str, user: str = "U0DEVONCALL", channel: str = ACME) -> dict:
    response = pipeline.command(text, user_id=user, channel_id=channel)
    assert response["statusCode"] == 200, response
    return json.loads(response["body"])


def responses_to(pipeline, channel: str, user: str) -> list[dict]:
    return [r for r in pipeline.slack.responses if r["hook"] == f"{channel}-{user}"]


def more_button(body: dict) -> str:
    (actions,) = [b for b in body["blocks"] if b["type"] == "actions"]
    (button,) = actions["elements"]
    assert button["action_id"] == history.MORE_ACTION
    return str(button["value"])


@pytest.fixture(scope="module")
def runs(pipeline):
    """Four runs of partner-acme, oldest first, ended; and one of partner-globex."""
    made = {
        "ok": start(pipeline, "consistency partner-acme sample=20"),
        "failed": start(pipeline, "incomplete-results partner-acme key_attribute=sk"),
        "drill": start(pipeline, "drill consistency partner-acme sample=20"),
    }
    throttle = start(pipeline, "throttle partner-acme window=20m")
    pipeline.wait_for(throttle, {"AWAITING_APPROVAL"}, 60)
    approve(pipeline, throttle, "U0ACMELEAD")
    while pipeline.wait_for(throttle, {"AWAITING_APPROVAL"}, 60).approval.step_id != "replay":
        time.sleep(0.05)
    assert "Cancelling" in answer(pipeline, f"cancel {throttle}")["text"]
    made["approved"] = throttle
    made["globex"] = start(pipeline, "timeout partner-globex", channel=GLOBEX)
    for execution_id in made.values():
        pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"}, 90)
    assert pipeline.drain(90)
    return made


def test_history_pages_newest_first_with_more_and_marks_drills(pipeline, runs, monkeypatch):
    monkeypatch.setattr(history, "PAGE_SIZE", 2)
    first = answer(pipeline, "history since=1h")
    assert "Acme Logistics's runs" in first["text"]
    lines = [b["text"]["text"] for b in first["blocks"] if b["type"] == "section"][1:]
    assert [runs["approved"] in lines[0], runs["drill"] in lines[1]] == [True, True]
    assert (
        "CANCELLED" in lines[0] and "approved by <@U0ACMELEAD>" in lines[0] and "<@U0DEVONCALL>" in lines[0]
    )
    assert lines[1].startswith("`[DRILL]`")
    assert runs["globex"] not in json.dumps(first), "another partner's run"

    assert pipeline.click(history.MORE_ACTION, more_button(first), user_id="U0SOMEONE")["statusCode"] == 200
    (second,) = responses_to(pipeline, ACME, "U0SOMEONE")
    assert second["response_type"] == "ephemeral" and second["replace_original"] is False
    assert runs["failed"] in second["text"] and runs["ok"] in second["text"]
    assert "FAILED" in json.dumps(second["blocks"]) and "PreflightFailed" in json.dumps(second["blocks"])

    failed_only = answer(pipeline, "history partner-acme failed since=1h")
    assert runs["failed"] in failed_only["text"] and runs["ok"] not in failed_only["text"]
    assert "That is all that matches." in json.dumps(failed_only["blocks"])
    consistency = answer(pipeline, "history consistency")
    assert runs["ok"] in consistency["text"] and runs["drill"] in consistency["text"]
    assert runs["approved"] not in consistency["text"]


def test_history_answers_only_in_the_partners_channels(pipeline, runs, monkeypatch):
    monkeypatch.setattr(history, "PAGE_SIZE", 2)
    refused = answer(pipeline, "history partner-acme", channel=GLOBEX)
    assert "shown in <#C0ACMEOPS>" in refused["text"] and runs["ok"] not in refused["text"]
    value = more_button(answer(pipeline, "history partner-acme"))
    pipeline.click(history.MORE_ACTION, value, user_id="U0GLOBEXLEAD", channel_id=GLOBEX)  # forwarded button
    (click,) = responses_to(pipeline, GLOBEX, "U0GLOBEXLEAD")
    assert "shown in <#C0ACMEOPS>" in click["text"] and runs["ok"] not in json.dumps(click)
    globex = answer(pipeline, "history", channel=GLOBEX)
    assert runs["globex"] in globex["text"] and runs["ok"] not in globex["text"]
    mine = answer(pipeline, "history partner-acme", user="U0STRANGER", channel="D0STRANGER")
    assert "none" in mine["text"], "in a DM, someone who is not an approver sees only their own runs"


def exported(pipeline, execution_id: str, channel: str = ACME) -> list:
    parent, _ = channel_thread(pipeline, execution_id, channel)
    assert pipeline.slack.wait_for(lambda: len(pipeline.slack.uploaded(channel, parent["ts"])) >= 2, 30)
    return pipeline.slack.uploaded(channel, parent["ts"])


def test_export_uploads_the_markdown_and_its_json_twin_to_the_runs_thread(pipeline, runs):
    execution_id = runs["approved"]
    acked = answer(pipeline, f"export {execution_id}", user="U0ACMESRE")
    assert "Exporting" in acked["text"] and "thread" in acked["text"]
    files = exported(pipeline, execution_id)
    assert sorted(f.filename for f in files) == [
        f"evidence-{execution_id}.json",
        f"evidence-{execution_id}.md",
    ]
    md = next(f for f in files if f.filename.endswith(".md")).content.decode()
    data = json.loads(next(f for f in files if f.filename.endswith(".json")).content)
    assert data["execution_id"] == execution_id and data["status"] == "CANCELLED"
    assert data["exported_by"] == "U0ACMESRE" and data["parameters"]["window"] == 1200
    assert [a["by"] for a in data["approvals"] if a["decision"] == "approved"] == ["U0ACMELEAD"]
    assert f"`{execution_id}`" in md and "## Approvals" in md and "U0ACMELEAD" in md
    _, replies = channel_thread(pipeline, execution_id)
    (shared,) = [r for r in replies if r.get("files")]
    assert "<@U0ACMESRE>" in shared["text"]
    again = answer(pipeline, f"export {execution_id}")
    assert "was asked for by <@U0ACMESRE>" in again["text"] or "is being uploaded" in again["text"]
    time.sleep(0.5)
    assert len(exported(pipeline, execution_id)) == 2, "a second ask within a minute uploads nothing"


def test_an_ended_runs_last_message_offers_export_evidence_and_a_click_rechecks_rights(pipeline, runs):
    execution_id = runs["ok"]
    _, replies = channel_thread(pipeline, execution_id)
    last = replies[-1]
    (actions,) = [b for b in last["blocks"] if b["type"] == "actions"]
    (button,) = actions["elements"]
    assert (button["action_id"], button["value"]) == ("export_evidence", execution_id)

    pipeline.click("export_evidence", execution_id, user_id="U0GLOBEXLEAD", channel_id=GLOBEX)
    refused = responses_to(pipeline, GLOBEX, "U0GLOBEXLEAD")[-1]
    assert "belongs to Acme Logistics" in refused["text"]
    stranger = answer(pipeline, f"export {execution_id}", user="U0STRANGER", channel="D0STRANGER")
    assert "belongs to Acme Logistics" in stranger["text"]
    parent, _ = channel_thread(pipeline, execution_id)
    assert pipeline.slack.uploaded(ACME, parent["ts"]) == [], "refusals upload nothing"

    pipeline.click("export_evidence", execution_id, user_id="U0DEVONCALL", channel_id=ACME)
    assert "Exporting" in responses_to(pipeline, ACME, "U0DEVONCALL")[-1]["text"]
    assert len(exported(pipeline, execution_id)) == 2


def test_a_failed_upload_says_so_in_the_thread_with_what_to_do(pipeline, runs):
    execution_id = runs["failed"]
    pipeline.slack.fail("files.completeUploadExternal", "not_in_channel")
    assert "Exporting" in answer(pipeline, f"export {execution_id}")["text"]

    def warned() -> list:
        _, replies = channel_thread(pipeline, execution_id)
        return [r for r in replies if "could not be uploaded" in r.get("text", "")]

    assert pipeline.slack.wait_for(lambda: bool(warned()), 30)
    (warning,) = warned()
    assert "`not_in_channel`" in warning["text"] and "/invite" in warning["text"]
    assert f"/runbook export {execution_id}" in warning["text"]
    assert pipeline.execution(execution_id).status is Status.FAILED, "the run itself is untouched"
