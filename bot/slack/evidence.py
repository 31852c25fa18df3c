"""The evidence file of a run: what a postmortem or a partner's auditor needs, as Markdown and as
its JSON twin, and its upload to the run's thread (the timeline consumer does it; never the ack).

`evidence()` is pure: one plain dict is the truth, the Markdown is rendered from it. The exporter
is the shell: it claims the request, reads the run, uploads both files with Slack's current flow
(`files_upload_v2`: files.getUploadURLExternal, a POST of the bytes, files.completeUploadExternal
with channel_id and thread_ts), and says in the thread when it cannot.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.engine.durations import format_duration
from bot.store.model import EventKind, Execution, StepRecord

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.catalog import Catalog
    from bot.engine.errors import ErrorCatalog
    from bot.engine.model import Runbook
    from bot.partners.model import Partner
    from bot.store.executions import ExecutionStore
    from bot.store.exports import ExportRequest, ExportStore
    from bot.store.slack_posts import PostsStore

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
MARKDOWN_VALUE_LIMIT = 20_000  # characters of one value shown in the Markdown; the JSON has it whole
_APPROVAL_EVENTS = {
    EventKind.APPROVAL_REQUESTED: "requested",
    EventKind.APPROVAL_GRANTED: "approved",
    EventKind.APPROVAL_REJECTED: "rejected",
    EventKind.APPROVAL_EXPIRED: "expired",
}


@dataclass(frozen=True)
class EvidenceFile:
    name: str
    title: str
    content: str


# -- the content (pure) ----------------------------------------------------------------------


def evidence(
    ex: Execution,
    runbook: Runbook | None,
    partner: Partner | None,
    errors: ErrorCatalog,
    outputs: Callable[[StepRecord], dict[str, Any]],
    *,
    exported_by: str,
    now_ms: int,
) -> dict[str, Any]:
    """Everything known about the run, as plain data: the JSON file, and the Markdown's source."""
    ended_ms = ex.updated_at_ms if ex.status.terminal else None
    took_ms = (ended_ms or now_ms) - ex.created_at_ms
    scope = _scope(ex, partner, outputs)
    order = [s.id for s in (*runbook.steps, *runbook.on_failure)] if runbook else []
    order += [sid for sid in ex.steps if sid not in order]
    steps = []
    for step_id in order:
        record = ex.steps.get(step_id)
        step = _step(runbook, step_id)
        entry: dict[str, Any] = {
            "id": step_id,
            "title": step.title if step else "",
            "action": step.action if step else "",
            "path": "on_failure" if runbook and step in runbook.on_failure else "main",
            "risk": step.risk.value if step else "",
            "outcome": record.outcome if record else "not run",
            "inputs": _inputs(step, scope) if step and record else {},
        }
        if record:
            entry.update(
                attempts=record.attempts,
                started_at=_iso(record.started_at_ms),
                finished_at=_iso(record.finished_at_ms),
                duration_ms=max(0, record.finished_at_ms - record.started_at_ms),
                outputs=outputs(record),
            )
            if record.error_code:
                entry["error"] = _error(record.error_code, record.error_message, errors)
        entry["retries"] = [
            {"at": _iso(e.at_ms), "summary": e.summary, "error_code": e.error_code}
            for e in ex.timeline
            if e.kind is EventKind.STEP_RETRY and e.step_id == step_id
        ]
        steps.append(entry)
    approvals = [
        {
            "step": e.step_id,
            "decision": _APPROVAL_EVENTS[e.kind],
            "by": e.actor,
            "at": _iso(e.at_ms),
            "comment": str(
                e.figures.get("comment") or (e.summary if e.kind is not EventKind.APPROVAL_REQUESTED else "")
            ),
            "effect": str(e.figures.get("effect") or ""),
        }
        for e in ex.timeline
        if e.kind in _APPROVAL_EVENTS
    ]
    if ex.approval and ex.approval.effect:
        for entry in approvals:
            if entry["step"] == ex.approval.step_id and not entry["effect"]:
                entry["effect"] = ex.approval.effect
    window_ms = ex.sla_resolution_minutes * 60_000
    data: dict[str, Any] = {
        "format": f"runbook-bot-evidence/{FORMAT_VERSION}",
        "execution_id": ex.execution_id,
        "runbook": {
            "name": ex.runbook,
            "version": ex.runbook_version,
            "title": runbook.title if runbook else "",
        },
        "partner": {"name": ex.partner, "display_name": partner.display_name if partner else ex.partner},
        "status": ex.status.value,
        "drill": ex.drill,
        "kind": ex.kind,  # run | plan (a dry run: nothing was changed)
        "plan_of": ex.plan_of or None,  # the plan a run was started from
        "trigger": ex.trigger,
        "requested_by": ex.requested_by,
        "channel": ex.channel,
        "started_at": _iso(ex.created_at_ms),
        "ended_at": _iso(ended_ms) if ended_ms else None,
        "duration_ms": took_ms,
        "sla": {
            "response_minutes": ex.sla_response_minutes,
            "resolution_minutes": ex.sla_resolution_minutes,
            "used": round(took_ms / window_ms, 4) if window_ms else None,
            "breached": bool(window_ms and took_ms > window_ms),
            "first_step_after_ms": _first_step_after(ex),
        },
        "parameters": dict(ex.params),
        "error": _error(ex.error.get("code", ""), ex.error.get("message", ""), errors)
        | {"step": ex.error.get("step", "")}
        if ex.error
        else None,
        "cancel_requested_by": ex.cancel_requested_by,
        "forced_over": ex.forced_over,
        "steps": steps,
        "approvals": approvals,
        "timeline": [
            {
                "seq": e.seq,
                "at": _iso(e.at_ms),
                "kind": e.kind.value,
                "summary": e.summary,
                "step": e.step_id,
                "actor": e.actor,
                "duration_ms": e.duration_ms,
                "error_code": e.error_code,
                "figures": dict(e.figures),
            }
            for e in ex.timeline
        ],
        "exported_at": _iso(now_ms),
        "exported_by": exported_by,
    }
    if ex.drill:
        data["drill_faults"] = {
            "injected": dict(ex.drill_faults),
            "time_limit_ms": (ex.drill_until_ms - ex.created_at_ms) if ex.drill_until_ms else None,
        }
    return data


def markdown(data: Mapping[str, Any]) -> str:
    """The evidence as a Markdown document a person reads top to bottom."""
    footer = f"_The JSON twin of this file holds the same facts, every value whole ({data['format']})._"
    return "\n".join(
        [*_summary(data), *_parameters(data), *_steps(data), *_approvals(data), *_timeline(data), footer, ""]
    )


def _summary(data: Mapping[str, Any]) -> list[str]:
    drill = "[DRILL] " if data["drill"] else "[PLAN] " if data.get("kind") == "plan" else ""
    runbook, partner, sla = data["runbook"], data["partner"], data["sla"]
    lines = [
        f"# {drill}Evidence: {_md(runbook['title'] or runbook['name'])} for {_md(partner['display_name'])}",
        "",
    ]
    if data["drill"]:
        lines += [
            "> **This was a drill**: a rehearsal against the partner's drill target, with injected faults.",
            "",
        ]
    if data.get("kind") == "plan":
        lines += ["> **This was a plan**: a dry run that read the partner's state and changed nothing.", ""]
    if data.get("plan_of"):
        lines += [f"Started from plan `{data['plan_of']}`.", ""]
    used = f", {sla['used']:.0%} of it used" if sla["used"] is not None else ""
    verdict = " **(breached)**" if sla["breached"] else ""
    rows = [
        ("Execution", f"`{data['execution_id']}`"),
        ("Runbook", f"`{_md(runbook['name'])}` v{_md(runbook['version'][:12])}"),
        ("Partner", f"{_md(partner['display_name'])} (`{_md(partner['name'])}`)"),
        ("Outcome", f"**{data['status']}**"),
        ("Started by", f"{_md(data['requested_by'])} ({_md(data['trigger'])})"),
        ("Channel", _md(data["channel"])),
        ("Started", data["started_at"]),
        ("Ended", data["ended_at"] or "still active"),
        ("Duration", format_duration(data["duration_ms"] / 1000)),
        (
            "SLA",
            f"resolution {sla['resolution_minutes']} min{used}{verdict}; response {sla['response_minutes']} min"
            + (
                f", first step after {format_duration(sla['first_step_after_ms'] / 1000)}"
                if sla["first_step_after_ms"] is not None
                else ""
            )
            if sla["resolution_minutes"]
            else "none",
        ),
        ("Exported", f"{data['exported_at']} by {_md(data['exported_by'])}"),
    ]
    lines += ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), ""]
    if data.get("error"):
        lines += ["## Error", "", *_error_lines(data["error"]), ""]
    return lines


def _parameters(data: Mapping[str, Any]) -> list[str]:
    lines = ["## Parameters", ""]
    if data["parameters"]:
        lines += ["| name | value |", "| --- | --- |"]
        lines += [f"| `{_md(k)}` | `{_md(_value(v))}` |" for k, v in sorted(data["parameters"].items())]
    else:
        lines.append("none")
    lines.append("")
    if data.get("drill_faults"):
        faults = data["drill_faults"]
        injected = ", ".join(f"{k}={v:.0%}" for k, v in sorted(faults["injected"].items())) or "none"
        limit = format_duration(faults["time_limit_ms"] / 1000) if faults["time_limit_ms"] else "none"
        lines += [
            "## Drill faults",
            "",
            f"Injected on the partner's clients: {injected}; time limit {limit}.",
            "",
        ]
    return lines


def _steps(data: Mapping[str, Any]) -> list[str]:
    lines = ["## Steps", ""]
    for n, step in enumerate(data["steps"], 1):
        title = f" — {_md(step['title'])}" if step["title"] else ""
        path = " (on failure)" if step["path"] == "on_failure" else ""
        lines += [f"### {n}. `{_md(step['id'])}`{title}{path}", ""]
        facts = [f"action `{_md(step['action'])}`", f"risk {step['risk']}"] if step["action"] else []
        if step["outcome"] == "not run":
            lines += [f"- Outcome: not run ({', '.join(facts)})" if facts else "- Outcome: not run", ""]
            continue
        lines.append(
            f"- Outcome: **{step['outcome']}** after {step['attempts']} attempt(s), "
            f"{format_duration(step['duration_ms'] / 1000)} ({step['started_at']} → {step['finished_at']})"
        )
        if facts:
            lines.append(f"- {', '.join(facts)}")
        for retry in step["retries"]:
            code = f" `{_md(retry['error_code'])}`" if retry["error_code"] else ""
            lines.append(f"- Retry at {retry['at']}:{code} {_md(retry['summary'])}")
        if step.get("error"):
            lines += ["- Error:", *(f"  {line}" for line in _error_lines(step["error"]))]
        lines += ["- Inputs:", *_block(step["inputs"]), "- Outputs:", *_block(step.get("outputs") or {}), ""]
    return lines


def _approvals(data: Mapping[str, Any]) -> list[str]:
    lines = ["## Approvals", ""]
    if data["approvals"]:
        lines += ["| step | decision | by | at | comment |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| `{_md(a['step'])}` | {a['decision']} | {_md(a['by']) or '—'} | {a['at']} | {_md(a['comment']) or '—'} |"
            for a in data["approvals"]
        ]
        effects = [a for a in data["approvals"] if a["effect"] and a["decision"] == "requested"]
        for a in effects:
            lines.append(f"\nEffect asked for at `{_md(a['step'])}`: {_md(a['effect'])}")
    else:
        lines.append("none")
    return [*lines, ""]


def _timeline(data: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Timeline",
        "",
        "| # | at | event | step | by | summary |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e in data["timeline"]:
        took = f" ({format_duration(e['duration_ms'] / 1000)})" if e["duration_ms"] is not None else ""
        code = f" `{_md(e['error_code'])}`" if e["error_code"] else ""
        lines.append(
            f"| {e['seq']} | {e['at']} | {e['kind']} | {_md(e['step']) or '—'} | {_md(e['actor']) or '—'} | "
            f"{_md(e['summary'])}{took}{code} |"
        )
    return [*lines, ""]


def evidence_files(data: Mapping[str, Any]) -> list[EvidenceFile]:
    stem = f"evidence-{data['execution_id']}"
    drill = "[DRILL] " if data["drill"] else ""
    return [
        EvidenceFile(f"{stem}.md", f"{drill}Evidence of {data['execution_id']} (Markdown)", markdown(data)),
        EvidenceFile(
            f"{stem}.json",
            f"{drill}Evidence of {data['execution_id']} (JSON)",
            json.dumps(data, indent=2, sort_keys=True, default=str) + "\n",
        ),
    ]


def _scope(
    ex: Execution, partner: Partner | None, outputs: Callable[[StepRecord], dict[str, Any]]
) -> dict[str, Any]:
    from bot.engine.executor import partner_scope

    view: dict[str, Any] = {}
    if partner is not None:
        try:
            view = partner_scope(partner.for_drill() if ex.drill else partner)
        except Exception:  # a drill target gone from the partner file: inputs show what resolves
            view = {}
    return {
        "params": ex.params,
        "partner": view,
        "steps": {sid: {"outputs": outputs(rec), "outcome": rec.outcome} for sid, rec in ex.steps.items()},
        "execution": {
            "id": ex.execution_id,
            "requested_by": ex.requested_by,
            "drill": ex.drill,
            "attempt": ex.attempt,
            "runbook": ex.runbook,
        },
    }


def _inputs(step: Any, scope: Mapping[str, Any]) -> dict[str, Any]:
    """The step's inputs as they resolve from the run's parameters and recorded outputs."""
    from bot.engine.expressions import render

    resolved: dict[str, Any] = {}
    for name, template in step.inputs.items():
        try:
            resolved[name] = render(template, scope)
        except Exception as error:
            resolved[name] = {"template": template, "unresolved": str(error)}
    return resolved


def _step(runbook: Runbook | None, step_id: str) -> Any:
    if runbook is None:
        return None
    try:
        return runbook.step(step_id)
    except KeyError:
        return None


def _error(code: str, message: str, errors: ErrorCatalog) -> dict[str, Any]:
    entry = errors.entry(code) if code else None
    return {
        "code": code,
        "message": message,
        "meaning": entry.meaning if entry else "not in the error catalog",
        "retryable": entry.retryable if entry else None,
        "decision": entry.decision if entry else "",
    }


def _error_lines(error: Mapping[str, Any]) -> list[str]:
    lines = [f"- `{_md(error['code'])}`: {_md(error['message'])}"]
    if error.get("step"):
        lines.append(f"- at step `{_md(error['step'])}`")
    retry = {True: "retryable", False: "not retryable", None: "unknown"}[error["retryable"]]
    lines.append(f"- catalog: {_md(error['meaning'])} ({retry})")
    if error["decision"]:
        lines.append(f"- what to do: {_md(error['decision'])}")
    return lines


def _first_step_after(ex: Execution) -> int | None:
    starts = [r.started_at_ms for r in ex.steps.values() if r.started_at_ms]
    return min(starts) - ex.created_at_ms if starts else None


def _block(value: Any) -> list[str]:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    if len(text) > MARKDOWN_VALUE_LIMIT:
        text = text[:MARKDOWN_VALUE_LIMIT] + "\n… (cut here; the JSON file has it whole)"
    fence = "~~~~"
    while fence in text:
        fence += "~"
    return [f"  {fence}json", *(f"  {line}" for line in text.splitlines()), f"  {fence}"]


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _md(text: Any) -> str:
    """A value inside a Markdown table cell or line: one line, no pipes or backticks breaking out."""
    return (
        str(text)
        .replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("`", "'")
        .replace("\n", " ")
        .replace("\r", " ")
    )


def _iso(at_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at_ms / 1000)) + f".{at_ms % 1000:03d}Z"


# -- the upload (the timeline consumer's shell) ---------------------------------------------------

UPLOADED_TEXT = "Evidence file of `{id}` (Markdown and JSON), as asked by {who}."
_FIXES = {
    "not_in_channel": "invite Runbook Bot to <#{channel}> (`/invite @runbook-bot`), then ask again",
    "channel_not_found": "the channel is gone or the bot cannot see it; invite Runbook Bot to <#{channel}>, then ask again",
    "is_archived": "<#{channel}> is archived; unarchive it to add files to the run's thread",
    "missing_scope": "the Slack app lacks the `files:write` scope: reinstall it from slack-manifest.yaml, then ask again",
    "file_uploads_disabled": "this workspace does not allow file uploads; an admin can allow them for apps",
    "file_upload_size_restricted": "this workspace limits the size of uploads; an admin can raise it",
    "storage_limit_reached": "the workspace's file storage is full; an admin can free some",
}


class EvidenceExporter:
    """Uploads a run's evidence files to its thread, once per request."""

    def __init__(
        self,
        slack: WebClient,
        store: ExecutionStore,
        posts: PostsStore,
        exports: ExportStore,
        catalog: Callable[[], Catalog],
        *,
        clock: Callable[[], float] = time.time,
        respond: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.slack = slack
        self.store = store
        self.posts = posts
        self.exports = exports
        self.catalog = catalog
        self.clock = clock
        self.respond = respond

    @classmethod
    def beside(cls, publisher: Any) -> EvidenceExporter:
        """An exporter on the timeline publisher's Slack client and table."""
        from bot.store.executions import ExecutionStore
        from bot.store.exports import ExportStore

        client, table = publisher.posts.client, publisher.posts.table
        return cls(
            publisher.slack,
            ExecutionStore(client, table),
            publisher.posts,
            ExportStore(client, table),
            publisher.catalog,
            clock=publisher.clock,
            respond=publisher.respond,
        )

    def handle(self, request: ExportRequest) -> str:
        """`uploaded`, `failed` (said in the thread, or to the requester), or `skipped` (another
        consumer has it, it is done already, or a newer request replaced it)."""
        from bot.store.exports import FAILED, UPLOADED

        now_ms = int(self.clock() * 1000)
        if not self.exports.claim(request, now_ms):
            return "skipped"
        ex = self.store.get(request.execution_id)
        if ex is None:
            self._tell(
                request,
                f"`{request.execution_id}` is gone (runs are kept 90 days); there is no evidence left to export.",
            )
            self.exports.finish(request, FAILED, "execution gone", now_ms)
            return "failed"
        posted = self.posts.get(ex.execution_id)
        channel = posted.channel or ex.channel
        if not posted.parent_ts:
            self._tell(
                request,
                f"`{ex.execution_id}` has no message in <#{channel}> yet, so its evidence file has no thread to go "
                "to. Once the run's timeline appears there, ask again with `/runbook export "
                f"{ex.execution_id}`.",
            )
            self.exports.finish(request, FAILED, "no thread", now_ms)
            return "failed"
        catalog = self.catalog()
        data = evidence(
            ex,
            catalog.runbooks.get(ex.runbook),
            catalog.partners.get(ex.partner),
            catalog.errors,
            lambda record: self.store.outputs(ex.execution_id, record),
            exported_by=request.requested_by,
            now_ms=now_ms,
        )
        files = evidence_files(data)
        try:
            answer = self.slack.files_upload_v2(
                file_uploads=[{"filename": f.name, "title": f.title, "content": f.content} for f in files],
                channel=channel,
                thread_ts=posted.parent_ts,
                initial_comment=UPLOADED_TEXT.format(id=ex.execution_id, who=_mention(request.requested_by)),
            )
        except Exception as error:  # any refusal: say so where people look, with what to do
            code = _failure_code(error)
            logger.warning("evidence upload failed", extra={"execution_id": ex.execution_id, "error": code})
            self._failed_in_thread(request, ex, channel, posted.parent_ts, code)
            self.exports.finish(request, FAILED, code, now_ms)
            return "failed"
        ids = ",".join(str(f.get("id")) for f in answer.get("files") or [])
        self.exports.finish(request, UPLOADED, ids, now_ms)
        return "uploaded"

    def _failed_in_thread(
        self, request: ExportRequest, ex: Execution, channel: str, thread_ts: str, code: str
    ) -> None:
        fix = _FIXES.get(
            code, "try again with the *Export evidence* button or `/runbook export {id}`"
        ).format(channel=channel, id=ex.execution_id)
        text = (
            f":warning: The evidence file of `{ex.execution_id}` could not be uploaded (Slack: `{code}`): {fix}. "
            f"Then use *Export evidence* or `/runbook export {ex.execution_id}` again."
        )
        try:
            self.slack.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text, unfurl_links=False)
        except Exception:  # the thread cannot be reached either: the requester hears it directly
            self._tell(request, text)

    def _tell(self, request: ExportRequest, text: str) -> None:
        from bot.slack.publisher import _answerable

        if not (self.respond and request.response_url and _answerable(request.response_url)):
            logger.warning(
                "could not tell the requester about their export",
                extra={"execution_id": request.execution_id},
            )
            return
        try:
            self.respond(
                request.response_url, {"response_type": "ephemeral", "replace_original": False, "text": text}
            )
        except Exception:
            logger.warning(
                "response_url refused the export answer", extra={"execution_id": request.execution_id}
            )


def _failure_code(error: Exception) -> str:
    from slack_sdk.errors import SlackApiError

    if isinstance(error, SlackApiError):
        from bot.slack.client import error_code

        return error_code(error)
    return "upload_failed"


def _mention(user: str) -> str:
    return f"<@{user}>" if user[:1] in {"U", "W"} else user
