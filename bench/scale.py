"""Many concurrent runs through the local pipeline: where the design's limits bind.

Starts N runs at once (waits, a retry after a backoff, an approval each), most of them for one
busy partner and a tenth for a quiet one, drives their approvals like on-call engineers, and
prints, beside the limit that applies in AWS and Slack:
- steps per second, and the runs' wall time;
- stream record → worker invocation, p50 and p99, per partner (a busy partner must not delay the
  quiet one);
- writes per second to the busiest due-index partition (sharded), against what one unsharded
  partition would have taken (a GSI partition takes about 1,000 writes/s);
- Slack posts per channel per second (Slack allows about 1 per second per channel, short bursts)
  and parent `chat.update`s per channel per minute (tier 3: about 50).
Asserts nothing. `--short` (CI) runs 24 runs to prove it works; the full run is 500.

    python bench/scale.py            # 500 runs
    python bench/scale.py --short    # 24 runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNBOOK = """\
# yaml-language-server: $schema=./schema.json
name: scale
title: Scale rehearsal
description: A step, a retry after a backoff, a wait, an approval and a last step.
steps:
  - {id: first, action: scale.effect, timeout_seconds: 10}
  - id: flaky
    action: scale.effect
    inputs: {fail_first: true}
    retry: {max_attempts: 3, base_seconds: 0.5, max_seconds: 2}
    timeout_seconds: 10
  - {id: pause, action: wait, inputs: {seconds: 2}, timeout_seconds: 10}
  - {id: gate, action: scale.effect, risk: high, timeout_seconds: 10}
  - {id: last, action: scale.effect, timeout_seconds: 10}
"""
PARTNERS = {"partner-acme": ("C0ACMEOPS", "U0ACMELEAD"), "partner-globex": ("C0GLOBEXOPS", "U0GLOBEXLEAD")}


class Effect:
    name = "scale.effect"
    outputs: tuple[str, ...] = ()
    always_high_risk = False
    inputs_schema: dict[str, Any] = {"type": "object"}

    def __init__(self) -> None:
        self.steps = 0
        self.lock = threading.Lock()

    def run(self, ctx: Any, inputs: dict[str, Any]) -> Any:
        from bot.actions.base import StepOutcome
        from bot.exceptions import ActionError

        if inputs.get("fail_first") and ctx.attempt == 1:
            raise ActionError("ThrottlingException", "first attempt throttled", retryable=True)
        with self.lock:
            self.steps += 1
        return StepOutcome.done(f"{ctx.step_id} done")

    def describe_effect(self, ctx: Any, inputs: dict[str, Any]) -> str:
        return "records a step"


class Observed:
    """What the bench watches from the side: worker records' age, and due-index writes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.record_age_ms: dict[str, list[float]] = defaultdict(list)  # partner -> ages
        self.due_writes: dict[str, list[float]] = defaultdict(list)  # bucket -> times

    def before_invoke(self, consumer: str, records: list[dict[str, Any]]) -> None:
        if consumer != "WorkerFunction":
            return
        now_ms = time.time() * 1000
        with self.lock:
            for record in records:
                image = record["dynamodb"].get("NewImage") or {}
                if "updated_at_ms" in image and "partner" in image:
                    self.record_age_ms[image["partner"]["S"]].append(
                        now_ms - int(image["updated_at_ms"]["N"])
                    )

    def watch_commits(self) -> None:
        from bot.store import keys
        from bot.store.executions import ExecutionStore

        original = ExecutionStore.commit
        observed = self

        def commit(store: ExecutionStore, execution_id: str, t: Any) -> None:
            original(store, execution_id, t)
            if "due_at_ms" in t.set:  # the item enters, moves in or leaves the due-index
                with observed.lock:
                    observed.due_writes[keys.due_bucket(execution_id)].append(time.monotonic())

        ExecutionStore.commit = commit  # type: ignore[method-assign]


def post_lag_by_partner(
    calls: Any, executions: dict[str, Any], runs: dict[str, str]
) -> dict[str, list[float]]:
    """Seconds from each timeline event to its first accepted post, per partner: the publisher
    paces each channel within Slack's limits, so a busy partner's channel may lag while a quiet
    partner's channel must not."""
    at_ms = {(i, e.seq): e.at_ms for i, ex in executions.items() for e in ex.timeline}
    lags: dict[str, list[float]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for call in calls:
        if not (call.ok and call.method == "chat.postMessage"):
            continue
        metadata = call.args.get("metadata") or {}
        if isinstance(metadata, str):  # a form-encoded call carries its metadata as JSON text
            metadata = json.loads(metadata)
        payload = metadata.get("event_payload") or {}
        key = (str(payload.get("execution_id")), int(payload.get("seq") or 0))
        if key in at_ms and key[1] and key not in seen:
            seen.add(key)
            lags[runs[key[0]]].append(call.at - at_ms[key] / 1000)
    return lags


def busiest_per_second(times: list[float]) -> int:
    """The most events in any one-second window."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] > 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="CI mode: 24 runs, proves the bench runs")
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    total = 24 if args.short else args.runs

    import os

    from bot.actions.base import REGISTRY, register
    from bot.local.pipeline import LocalPipeline, PipelineOptions

    effect = REGISTRY.get(Effect.name) or register(Effect())
    observed = Observed()
    observed.watch_commits()
    runbooks = Path(tempfile.mkdtemp(prefix="scale-runbooks-"))
    shutil.copytree(
        ROOT / "runbooks", runbooks, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".compiled")
    )
    (runbooks / "scale.yaml").write_text(RUNBOOK)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    if args.short:  # CI proves the bench runs: Slack's limits 50x faster than real time
        os.environ.setdefault("SLACK_STAND_IN_TIME_SCALE", "0.02")
    scale = float(os.environ.get("SLACK_STAND_IN_TIME_SCALE") or 1.0)
    options = PipelineOptions(
        engine="moto",
        sweep_interval=0.5,
        before_invoke=observed.before_invoke,
        extra_env={"RUNBOOKS_DIR": str(runbooks)},
    )
    quiet = max(1, total // 10)
    plan = ["partner-acme"] * (total - quiet) + ["partner-globex"] * quiet
    with LocalPipeline(options) as pipeline:
        started = time.monotonic()
        started_wall = time.time()
        runs: dict[str, str] = {}
        for i, partner in enumerate(plan):
            channel, _ = PARTNERS[partner]
            response = pipeline.command(f"scale {partner}", channel_id=channel, trigger_id=f"scale-{i}")
            text = json.loads(response["body"])["text"]
            runs[text.split("execution `")[1].split("`")[0]] = partner
        issued = time.monotonic() - started
        clicked: set[tuple[str, int]] = set()
        pending = set(runs)
        deadline = time.monotonic() + (120 if args.short else 1800)
        while pending and time.monotonic() < deadline:
            for execution_id in list(pending):
                ex = pipeline.execution(execution_id)
                if ex.status.terminal:
                    pending.discard(execution_id)
                elif ex.approval and not ex.approval.decision and (execution_id, ex.version) not in clicked:
                    clicked.add((execution_id, ex.version))
                    channel, approver = PARTNERS[runs[execution_id]]
                    value = json.dumps(
                        {"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.version}
                    )
                    pipeline.click("approve", value, user_id=approver, channel_id=channel)
            time.sleep(0.2)
        ended = time.monotonic() - started
        drained = pipeline.drain(600)
        on_failure = {name: d.stats.sent_to_on_failure for name, d in pipeline.deliveries.items()}
        executions = {i: pipeline.execution(i) for i in runs}
        statuses = Counter(ex.status.value for ex in executions.values())
        post_lag = post_lag_by_partner(pipeline.slack.calls, executions, runs)
        posts: dict[str, list[float]] = defaultdict(list)
        updates: dict[str, list[float]] = defaultdict(list)
        refused = Counter(c.method for c in pipeline.slack.calls if c.status == 429)
        for call in pipeline.slack.calls:
            if call.ok and call.method == "chat.postMessage":
                posts[str(call.args.get("channel"))].append(call.at)
            elif call.ok and call.method == "chat.update":
                updates[str(call.args.get("channel"))].append(call.at)

    print(
        f"scale: {total} runs ({total - quiet} for partner-acme, {quiet} for partner-globex), each a step, "
        f"a retry after a backoff, a 2 s wait, an approval and a step; local pipeline on moto"
        + (
            f"; Slack's limits {1 / scale:.0f}x faster than real time"
            if scale != 1.0
            else "; Slack's limits in real time"
        )
    )
    print(
        f"  started in {issued:.1f}s, all ended in {ended:.1f}s: {dict(statuses)}{'; unfinished: ' + str(len(pending)) if pending else ''}"
    )
    print(f"  steps run: {effect.steps} ({effect.steps / ended:.1f} steps/s)")
    print(f"  stream consumers caught up: {drained}; records sent to on-failure queues: {on_failure}")
    print("  stream record → worker invocation (ms):")
    for partner in PARTNERS:
        ages = observed.record_age_ms.get(partner, [])
        print(
            f"    {partner:16} p50 {percentile(ages, 50):7.0f}   p99 {percentile(ages, 99):7.0f}   "
            f"({len(ages)} records)"
        )
    print("  timeline event → its post in the run's thread (s; each channel paced on its own):")
    for partner in PARTNERS:
        lags = post_lag.get(partner, [])
        print(
            f"    {partner:16} p50 {percentile(lags, 50):7.1f}   p99 {percentile(lags, 99):7.1f}   "
            f"max {max(lags, default=float('nan')):7.1f}   ({len(lags)} posts)"
        )
    every_bucket = [t for times in observed.due_writes.values() for t in times]
    busiest = max(observed.due_writes, key=lambda b: len(observed.due_writes[b]), default="")
    print(
        f"  due-index writes: busiest partition {busiest} {busiest_per_second(observed.due_writes.get(busiest, []))}/s "
        f"at peak; one unsharded partition would take {busiest_per_second(every_bucket)}/s (limit ~1,000/s a partition)"
    )
    print(f"  Slack answered 429 (what pacing did not avoid), by method: {dict(refused) or 'none'}")
    for channel in sorted(set(posts) | set(updates)):
        times = sorted(posts[channel] + updates[channel])
        span = max(1.0, times[-1] - times[0]) if times else 1.0
        print(
            f"  Slack {channel}: chat.postMessage peak {busiest_per_second(posts[channel])}/s, mean "
            f"{len(posts[channel]) / span:.2f}/s over {span:.0f}s (Slack: ~1/s a channel); chat.update "
            f"{len(updates[channel]) / (span / 60):.0f}/min (tier 3: ~50/min); the channel's last post "
            f"{times[-1] - started_wall - ended:.0f}s after the last run ended"
            if times
            else f"  Slack {channel}: nothing posted"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
