"""`runbook-bot drill`: rehearse a runbook on this machine, with faults, and report the verdict.

The whole local pipeline runs (embedded AWS seeded with the demo, stream delivery, Slack
stand-in); the drill is started exactly as `/runbook drill` would start it (a signed command
from the partner's channel), each approval is given by one of the partner's approvers (never the
requester), and the run's own timeline is judged by bot.engine.verdict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.engine.verdict import DrillReport, judge

DRILLER = "U0DRILLBOT"  # the requester: not an approver, so approvals come from someone else


@dataclass(frozen=True)
class DrillResult:
    report: DrillReport
    injected: dict[str, int]
    seconds: float
    channel_events: int


def run_local_drill(
    runbook: str,
    partner: str,
    *,
    faults: str | None = None,
    time_limit: str | None = None,
    engine: str = "moto",
    approve: bool = True,
    on_records: Callable[[str, list[dict[str, Any]]], None] | None = None,
    on_started: Callable[[], None] | None = None,
) -> DrillResult:
    """Run the drill; `on_records` sees each batch of stream records a function gets (the
    console's progress lines), `on_started` is called once the pipeline runs."""
    import boto3

    from bot.catalog import load_catalog
    from bot.demo import seed_demo
    from bot.handlers import worker
    from bot.local.pipeline import LocalPipeline, PipelineOptions

    started = time.monotonic()
    options = PipelineOptions(engine=engine, sweep_interval=1.0, before_invoke=on_records)
    with LocalPipeline(options) as pipeline:
        if on_started is not None:
            on_started()
        seed_demo(boto3.session.Session())
        catalog = load_catalog()
        if partner not in catalog.partners:
            raise SystemExit(f"no partner named `{partner}`; partners: {', '.join(sorted(catalog.partners))}")
        p = catalog.partners[partner]
        words = [f"drill {runbook} {partner}"]
        if faults is not None:
            words.append(f"faults={faults}")
        if time_limit is not None:
            words.append(f"for={time_limit}")
        channel = p.channels[0] if p.channels else "C0DRILLS"
        response = pipeline.command(" ".join(words), user_id=DRILLER, channel_id=channel)
        answer = json.loads(response["body"]).get("text", "")
        if "execution `" not in answer:
            raise SystemExit(f"the drill did not start: {answer}")
        execution_id = answer.split("execution `")[1].split("`")[0]
        ex = pipeline.execution(execution_id)
        limit_s = ((ex.drill_until_ms or 0) - ex.created_at_ms) / 1000 + 120
        approver = next((a for a in p.approvers if a.startswith(("U", "W"))), "")
        deadline = time.monotonic() + limit_s
        decided: set[tuple[str, int]] = set()
        while time.monotonic() < deadline:
            ex = pipeline.execution(execution_id)
            if ex.status.terminal:
                break
            if approve and approver and ex.approval is not None and ex.approval.decision == "":
                key = (ex.approval.step_id, ex.version)
                if key not in decided:
                    decided.add(key)
                    value = json.dumps(
                        {"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.version}
                    )
                    pipeline.click("approve", value, user_id=approver, channel_id=channel)
            time.sleep(0.1)
        pipeline.drain(30)
        ex = pipeline.execution(execution_id)
        injector = worker.SANDBOX().sessions.get(p, ex.drill_faults, drill=True).injector
        stats = injector.stats if injector else None
        injected = (
            {
                "requests": stats.total,
                "throttled": stats.throttled,
                "timeouts": stats.timeouts,
                "errors": stats.errors,
            }
            if stats
            else {}
        )
        events = len(pipeline.slack.messages(channel))
        return DrillResult(judge(ex, catalog.runbooks[runbook]), injected, time.monotonic() - started, events)
