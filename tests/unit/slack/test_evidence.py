"""The evidence file: everything a postmortem or an auditor needs, the same in Markdown and JSON."""

from __future__ import annotations

import json
from typing import Any

from bot.catalog import load_catalog
from bot.slack.evidence import evidence, evidence_files, markdown
from bot.store.model import Approval, EventKind, Execution, Status, StepRecord, TimelineEvent

T0 = 1_795_000_000_000
MIN = 60_000
PARAMS = {"table": "orders", "window": 900, "mode": "on-demand", "write_units": 200}


def ended_run(**changes: Any) -> Execution:
    events = [
        TimelineEvent(1, T0, EventKind.RUN_STARTED, "started", actor="U0ONCALL"),
        TimelineEvent(
            2, T0 + 1_000, EventKind.STEP_FINISHED, "read 15 minutes", step_id="detect", duration_ms=800
        ),
        TimelineEvent(
            3, T0 + 2_000, EventKind.APPROVAL_REQUESTED, "raise capacity to 400 WCU", step_id="mitigate"
        ),
        TimelineEvent(
            4,
            T0 + 3 * MIN,
            EventKind.APPROVAL_GRANTED,
            "approved",
            step_id="mitigate",
            actor="U0ACMELEAD",
            figures={"comment": "ok | go `now`\nfine"},
        ),
        TimelineEvent(
            5,
            T0 + 4 * MIN,
            EventKind.STEP_RETRY,
            "throttled; again in 2s",
            step_id="mitigate",
            error_code="ThrottlingException",
        ),
        TimelineEvent(
            6,
            T0 + 5 * MIN,
            EventKind.STEP_FAILED,
            "UpdateTable refused",
            step_id="mitigate",
            error_code="ThrottlingException",
            duration_ms=2 * MIN,
        ),
        TimelineEvent(7, T0 + 150 * MIN, EventKind.RUN_FAILED, "failed at mitigate"),
    ]
    base: dict[str, Any] = dict(
        execution_id="rb-abcdefghij",
        runbook="throttle",
        runbook_version="0123456789abcdef",
        partner="partner-acme",
        status=Status.FAILED,
        version=9,
        params=PARAMS,
        requested_by="U0ONCALL",
        channel="C0ACMEOPS",
        created_at_ms=T0,
        updated_at_ms=T0 + 150 * MIN,
        total_steps=7,
        sla_response_minutes=15,
        sla_resolution_minutes=120,
        steps={
            "detect": StepRecord("detect", "succeeded", 1, T0 + 200, T0 + 1_000, {"throttled_writes": 42}),
            "mitigate": StepRecord(
                "mitigate",
                "failed",
                3,
                T0 + 3 * MIN,
                T0 + 5 * MIN,
                error_code="ThrottlingException",
                error_message="UpdateTable refused",
                spilled=True,
            ),
        },
        approval=Approval(
            "mitigate",
            T0 + 2_000,
            T0 + 32 * MIN,
            "raise capacity to 400 WCU",
            "approved",
            "U0ACMELEAD",
            T0 + 3 * MIN,
        ),
        error={"code": "ThrottlingException", "message": "UpdateTable refused", "step": "mitigate"},
        timeline=tuple(events),
    )
    base.update(changes)
    return Execution(**base)


def build(ex: Execution) -> dict[str, Any]:
    catalog = load_catalog()
    spilled = {"mitigate": {"previous": {"write_units": 100}, "blob": "x" * 30_000}}
    return evidence(
        ex,
        catalog.runbooks[ex.runbook],
        catalog.partners[ex.partner],
        catalog.errors,
        lambda record: spilled[record.step_id] if record.spilled else record.outputs,
        exported_by="U0AUDITOR",
        now_ms=T0 + 200 * MIN,
    )


def test_every_step_appears_with_inputs_outputs_attempts_and_its_errors_meaning():
    data = build(ended_run())
    catalog = load_catalog()
    runbook = catalog.runbooks["throttle"]
    assert [s["id"] for s in data["steps"]] == [s.id for s in (*runbook.steps, *runbook.on_failure)]
    detect = next(s for s in data["steps"] if s["id"] == "detect")
    assert detect["inputs"] == {"table": "acme-orders", "window_seconds": 900}, "resolved from the run"
    assert detect["outputs"] == {"throttled_writes": 42} and detect["attempts"] == 1
    mitigate = next(s for s in data["steps"] if s["id"] == "mitigate")
    assert mitigate["outputs"]["previous"] == {"write_units": 100}, "spilled outputs are read back"
    assert mitigate["attempts"] == 3 and mitigate["retries"][0]["error_code"] == "ThrottlingException"
    assert mitigate["error"]["meaning"] == catalog.errors.entry("ThrottlingException").meaning
    assert mitigate["error"]["retryable"] is True
    assert next(s for s in data["steps"] if s["id"] == "replay")["outcome"] == "not run"
    assert data["parameters"] == PARAMS
    assert data["error"]["step"] == "mitigate"


def test_approvals_say_who_when_and_the_comment_and_timings_meet_the_sla():
    data = build(ended_run())
    requested, granted = data["approvals"]
    assert (requested["decision"], requested["effect"]) == ("requested", "raise capacity to 400 WCU")
    assert (granted["decision"], granted["by"], granted["comment"]) == (
        "approved",
        "U0ACMELEAD",
        "ok | go `now`\nfine",
    )
    assert granted["at"].endswith("Z")
    assert data["duration_ms"] == 150 * MIN
    assert data["sla"]["breached"] is True and data["sla"]["used"] == 1.25
    assert data["sla"]["first_step_after_ms"] == 200
    assert data["drill"] is False and "drill_faults" not in data


def test_a_drill_is_marked_and_its_faults_listed():
    data = build(
        ended_run(drill=True, drill_faults={"throttle": 0.2}, drill_until_ms=T0 + 10 * MIN, trigger="drill")
    )
    assert data["drill_faults"] == {"injected": {"throttle": 0.2}, "time_limit_ms": 10 * MIN}
    detect = next(s for s in data["steps"] if s["id"] == "detect")
    assert detect["inputs"]["table"] == "acme-orders-drill", "a drill's inputs name its drill tables"
    md = markdown(data)
    assert md.startswith("# [DRILL] Evidence") and "This was a drill" in md and "throttle=20%" in md
    assert all(f.title.startswith("[DRILL]") for f in evidence_files(data))


def test_the_markdown_and_its_json_twin_say_the_same_and_hostile_text_stays_in_its_cell():
    data = build(ended_run())
    md_file, json_file = evidence_files(data)
    assert (md_file.name, json_file.name) == ("evidence-rb-abcdefghij.md", "evidence-rb-abcdefghij.json")
    assert json.loads(json_file.content) == json.loads(json.dumps(data, default=str))
    md = md_file.content
    for heading in ("## Error", "## Parameters", "## Steps", "## Approvals", "## Timeline"):
        assert heading in md
    assert "**FAILED**" in md and "(breached)" in md and "ThrottlingException" in md
    (row,) = [line for line in md.splitlines() if line.startswith("| `mitigate` | approved")]
    assert row.count(" | ") == 4 and "\\|" in row and "`now`" not in row, (
        "a pipe, backtick or newline breaks no table"
    )
    assert (
        "cut here; the JSON file has it whole" in md
        and len(json.loads(json_file.content)["steps"][4]["outputs"]["blob"]) == 30_000
    )


def test_an_active_run_can_be_exported_and_says_it_is_still_going():
    data = build(ended_run(status=Status.RUNNING, updated_at_ms=T0 + 5 * MIN, error={}))
    assert data["ended_at"] is None and data["duration_ms"] == 200 * MIN
    assert "still active" in markdown(data)
