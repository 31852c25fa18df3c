"""Chaos: 200 runs through the local pipeline with every fault at once.

Each stream record is delivered 1-3 times, batches are split and retried, the worker dies at
random points (before a batch, between a step's effect and its commit, after its commits), Slack
answers 429/5xx to 20% of calls and DynamoDB throttles 10% of the bot's own requests. Every run
must end, every step's effect must happen exactly once, every timeline event must reach the
channel once and in order, and nothing may land in an on-failure queue.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.actions.base import REGISTRY, ActionContext, StepOutcome, register
from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.store.model import TERMINAL, Status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = int(os.environ.get("CHAOS_RUNS", "200"))
REPO = Path(__file__).resolve().parents[2]
CHAOS_RUNBOOK = """\
# yaml-language-server: $schema=./schema.json
name: chaos
title: Chaos rehearsal
description: Three steps with effects, for the chaos suite.
steps:
  - {id: first, action: chaos.effect, timeout_seconds: 5}
  - {id: second, action: chaos.effect, timeout_seconds: 5}
  - {id: third, action: chaos.effect, timeout_seconds: 5}
"""


class Ledger:
    """An idempotent effect: applying the same idempotency key again changes nothing."""

    name = "chaos.effect"
    outputs: tuple[str, ...] = ("applied",)
    always_high_risk = False
    inputs_schema: dict = {"type": "object"}

    def __init__(self) -> None:
        self.applied: dict[str, tuple[str, str]] = {}  # idempotency key -> (execution, step)
        self.calls = 0
        self.lock = threading.Lock()

    def run(self, ctx: ActionContext, inputs: dict) -> StepOutcome:
        with self.lock:
            self.calls += 1
            self.applied.setdefault(ctx.idempotency_key, (ctx.execution_id, ctx.step_id))
        return StepOutcome.done(f"{ctx.step_id} applied", {"applied": True})

    def describe_effect(self, ctx: ActionContext, inputs: dict) -> str:
        return "records one effect"

    def per_step(self) -> Counter[tuple[str, str]]:
        return Counter(self.applied.values())


@pytest.fixture(scope="module")
def ledger() -> Iterator[Ledger]:
    action = REGISTRY.get("chaos.effect") or register(Ledger())
    assert isinstance(action, Ledger)
    yield action
    REGISTRY.pop("chaos.effect", None)  # other tests list the registry's actions


@pytest.fixture(scope="module")
def chaos(tmp_path_factory, ledger):
    runbooks = tmp_path_factory.mktemp("runbooks")
    shutil.copytree(
        REPO / "runbooks", runbooks, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".compiled")
    )
    (runbooks / "chaos.yaml").write_text(CHAOS_RUNBOOK)
    options = PipelineOptions(
        engine="moto",
        sweep_interval=0.5,
        duplicate_rate=0.5,  # half the records come again, 1 or 2 more times: 1-3 deliveries
        max_duplicates=2,
        split_rate=0.3,
        worker_crash_rate=0.03,
        slack_fault_rate=0.2,
        bot_throttle_rate=0.1,
        seed=11,
        extra_env={"RUNBOOKS_DIR": str(runbooks), "BOT_DYNAMODB_MAX_ATTEMPTS": "4"},
    )
    with LocalPipeline(options) as pipeline:
        yield pipeline


def start_runs(pipeline: LocalPipeline) -> list[str]:
    ids = []
    for i in range(RUNS):
        response = pipeline.command("chaos partner-acme", trigger_id=f"chaos-{i}")
        assert response["statusCode"] == 200, response
        ids.append(json.loads(response["body"])["text"].split("execution `")[1].split("`")[0])
    return ids


def test_every_run_ends_every_effect_once_every_event_once_in_order(chaos, ledger):
    started = time.monotonic()
    ids = start_runs(chaos)
    deadline = time.monotonic() + 420
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        pending = {i for i in pending if chaos.execution(i).status not in TERMINAL}
        time.sleep(0.5)
    assert not pending, f"{len(pending)} runs never ended, e.g. {sorted(pending)[:3]}"
    ended = time.monotonic() - started
    if os.environ.get("CHAOS_TRACE"):
        _trace(chaos)
    drained = chaos.drain(300)
    backlog = {name: d.backlog() for name, d in chaos.deliveries.items()}
    assert drained, f"the stream consumers did not catch up: records left {backlog}"
    print(f"\nall runs ended after {ended:.0f}s; drained after {time.monotonic() - started:.0f}s")

    runs = {i: chaos.execution(i) for i in ids}
    statuses = Counter(ex.status.value for ex in runs.values())
    effects = ledger.per_step()
    worker = chaos.deliveries["WorkerFunction"].stats
    timeline = chaos.deliveries["TimelineFunction"].stats
    slack_faults = sum(1 for c in chaos.slack.calls if c.status in {429, 500, 502, 503})
    print(
        f"\nchaos: {RUNS} runs in {time.monotonic() - started:.0f}s: {dict(statuses)}; "
        f"effects applied {sum(effects.values())} ({ledger.calls} action calls); "
        f"worker: {worker.records_delivered} records delivered for {worker.records_seen} seen, "
        f"{worker.invocations} invocations, {worker.batches_failed} failed batches; "
        f"crashes {chaos.crashes.count if chaos.crashes else {}}; "
        f"bot table throttled {chaos.bot_faults.stats.throttled} of {chaos.bot_faults.stats.total} requests; "
        f"Slack faults {slack_faults} of {len(chaos.slack.calls)} calls; "
        f"on-failure: worker {worker.sent_to_on_failure}, timeline {timeline.sent_to_on_failure}"
    )

    assert statuses == {"SUCCEEDED": RUNS}, {
        i: ex.error for i, ex in runs.items() if ex.status is not Status.SUCCEEDED
    }
    expected = {(i, s) for i in ids for s in ("first", "second", "third")}
    assert set(effects) == expected and set(effects.values()) == {1}, "each step's effect exactly once"
    assert worker.sent_to_on_failure == 0 and timeline.sent_to_on_failure == 0
    assert chaos.crashes is not None and chaos.crashes.total > 0, "the worker was killed along the way"
    assert slack_faults > 0 and chaos.bot_faults.stats.throttled > 0

    for execution_id, ex in runs.items():
        parents = [
            m
            for m in chaos.slack.messages(ex.channel)
            if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == execution_id
        ]
        assert len(parents) == 1, f"{execution_id}: {len(parents)} parent messages"
        replies = chaos.slack.thread(ex.channel, parents[0]["ts"])[1:]
        seqs = [r["metadata"]["event_payload"]["seq"] for r in replies]
        assert seqs == [e.seq for e in ex.timeline], (
            f"{execution_id}: events {seqs} of {[(e.seq, e.kind.value) for e in ex.timeline]} "
            f"(version {ex.version}); posts {_posts(execution_id)}"
        )


def _trace(chaos: LocalPipeline) -> None:
    """Diagnostics while draining (CHAOS_TRACE=1): backlog and Slack traffic every 10 seconds."""

    def report() -> None:
        while True:
            time.sleep(10)
            calls = chaos.slack.calls
            faults = sum(1 for c in calls if c.status != 200)
            backlog = {n: d.backlog() for n, d in chaos.deliveries.items()}
            stats = chaos.deliveries["TimelineFunction"].stats
            print(
                f"trace: backlog {backlog}; slack {len(calls)} calls ({faults} faults); timeline "
                f"{stats.invocations} invocations, {stats.batches_failed} failed batches",
                flush=True,
            )

    threading.Thread(target=report, daemon=True).start()


def _posts(execution_id: str) -> object:
    from bot.config import executions_table
    from bot.store.executions import dynamodb_client
    from bot.store.slack_posts import PostsStore

    return PostsStore(dynamodb_client(), executions_table()).get(execution_id)
