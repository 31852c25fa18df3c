"""Chaos: 200 runs (and a few plans beside them) through the local pipeline with every fault at once.

Each stream record is delivered 1-3 times, batches are split and retried, the worker dies at
random points (before a batch, between a step's effect and its commit, after its commits), Slack
answers 429/5xx to 20% of calls and DynamoDB throttles 10% of the bot's own requests. Every fifth
run fails at its risky step and is resumed by two people's `/runbook retry` at once. Every run
must end SUCCEEDED, every step's effect must happen exactly once, every timeline event must reach
the channel once and in order, and nothing may land in an on-failure queue.
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
from typing import Any

import boto3
import pytest

from bot.actions.base import REGISTRY, ActionContext, StepOutcome, register
from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.store import keys
from bot.store.model import TERMINAL, Status
from tests.integration.test_drill_isolation import production

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = int(os.environ.get("CHAOS_RUNS", "200"))
REPO = Path(__file__).resolve().parents[2]
CHAOS_RUNBOOK = """\
# yaml-language-server: $schema=./schema.json
name: chaos
title: Chaos rehearsal
description: Steps with effects, a retry after a backoff, a wait and an approval, for the chaos suite.
parameters:
  doomed: {type: bool, default: false, description: the risky step fails until the run is resumed}
steps:
  - {id: first, action: chaos.effect, timeout_seconds: 5}
  - id: flaky
    action: chaos.effect
    inputs: {fail_first: true}
    retry: {max_attempts: 3, base_seconds: 0.5, max_seconds: 2}
    timeout_seconds: 5
  - {id: pause, action: wait, inputs: {seconds: 1}, timeout_seconds: 10}
  - {id: second, action: chaos.effect, risk: high, inputs: {fail_until_resumed: "{{ params.doomed }}"}, timeout_seconds: 5}
  - {id: third, action: chaos.effect, timeout_seconds: 5}
"""
EFFECT_STEPS = ("first", "flaky", "second", "third")
DOOMED_EVERY = 5  # every fifth run fails at `second` until `/runbook retry` resumes it
APPROVERS = ("U0ACMELEAD", "U0ACMESRE")  # the chaos partner needs both: approvals {high: 2}


class Ledger:
    """An idempotent effect: applying the same idempotency key again changes nothing.

    It also watches for what must never happen: two executions of one step attempt at once.
    """

    name = "chaos.effect"
    outputs: tuple[str, ...] = ("applied",)
    always_high_risk = False
    inputs_schema: dict = {"type": "object"}

    def __init__(self) -> None:
        self.applied: dict[str, tuple[str, str]] = {}  # idempotency key -> (execution, step)
        self.calls = 0
        self.in_flight: set[str] = set()
        self.overlaps: list[str] = []
        self.lock = threading.Lock()

    def run(self, ctx: ActionContext, inputs: dict) -> StepOutcome:
        from bot.exceptions import ActionError

        key = ctx.idempotency_key
        with self.lock:
            self.calls += 1
            if key in self.in_flight:
                self.overlaps.append(key)
            self.in_flight.add(key)
        try:
            time.sleep(0.02)  # long enough for a racing worker or sweeper to show itself
            if inputs.get("fail_first") and ctx.attempt == 1:
                raise ActionError("ThrottlingException", "injected first-attempt throttle", retryable=True)
            first_life = key == keys.idempotency_key(ctx.execution_id, ctx.step_id, ctx.attempt)
            if inputs.get("fail_until_resumed") and first_life:
                raise ActionError("ValidationException", "injected fault until resumed", retryable=False)
            with self.lock:
                self.applied.setdefault(key, (ctx.execution_id, ctx.step_id))
            return StepOutcome.done(f"{ctx.step_id} applied", {"applied": True})
        finally:
            with self.lock:
                self.in_flight.discard(key)

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
    partner = runbooks / "partners" / "partner-acme.yaml"
    partner.write_text(partner.read_text() + "approvals: {high: 2}\n")
    options = PipelineOptions(
        engine="moto",
        sweep_interval=0.15,  # the sweeper fires several times a second, at every moment of a run
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
        import boto3

        from bot.demo import seed_demo

        seed_demo(boto3.session.Session())  # the drill beside the runs rehearses on the demo's drill table
        yield pipeline


def start_plan(pipeline: LocalPipeline, text: str, trigger_id: str) -> str:
    response = pipeline.command(f"plan {text}", trigger_id=trigger_id)
    assert response["statusCode"] == 200, response
    return str(json.loads(response["body"])["text"].split("plan `")[1].split("`")[0])


def start_runs(pipeline: LocalPipeline) -> list[str]:
    ids = []
    for i in range(RUNS):
        doomed = " doomed=true" if i % DOOMED_EVERY == 0 else ""
        response = pipeline.command(f"chaos partner-acme{doomed}", trigger_id=f"chaos-{i}")
        assert response["statusCode"] == 200, response
        text = json.loads(response["body"])["text"]
        assert "execution `" in text, text
        ids.append(text.split("execution `")[1].split("`")[0])
    return ids


class Approvers:
    """Two approvers who both click every approval at once, from two threads; the partner needs
    both (a quorum of 2), so both must count, neither twice. A click that hit a fault ("nothing
    changed, try again") is clicked again a moment later, as a person would."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        self.pipeline = pipeline
        self.clicked: set[tuple[str, str, int]] = set()  # approvals raced: (run, step, asked at)
        self.last: dict[tuple[str, str, int, str], float] = {}
        self.again = 0
        self.answers: list[int] = []

    def click_waiting(self, ids: set[str]) -> None:
        for execution_id in ids:
            ex = self.pipeline.execution(execution_id)
            if ex.status is not Status.AWAITING_APPROVAL or ex.approval is None:
                continue
            approval = (execution_id, ex.approval.step_id, ex.approval.requested_at_ms)
            value = json.dumps(
                {"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.approval.version}
            )
            if approval not in self.clicked:
                self.clicked.add(approval)
                self._race(approval, value, APPROVERS)
                continue
            missing = [u for u in APPROVERS if not ex.approval.voted(u)]
            retry = [u for u in missing if time.monotonic() - self.last.get((*approval, u), 0) > 2]
            if retry:
                self.again += len(retry)
                self._race(approval, value, tuple(retry))

    def _race(self, approval: tuple[str, str, int], value: str, users: tuple[str, ...]) -> None:
        racing = [threading.Thread(target=self._click, args=(value, user)) for user in users]
        for t in racing:
            t.start()
        for t in racing:
            t.join()
        for user in users:
            self.last[(*approval, user)] = time.monotonic()

    def _click(self, value: str, user: str) -> None:
        self.answers.append(self.pipeline.click("approve", value, user_id=user)["statusCode"])


class Retriers:
    """The requester and an approver both `/runbook retry` a failed run at the same moment: one
    resumes it, the other is told (the claim rule and the version decide, as for clicks)."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        self.pipeline = pipeline
        self.tried: set[tuple[str, int]] = set()
        self.answers: dict[tuple[str, int], list[tuple[int, str]]] = {}

    def retry_failed(self, ids: set[str]) -> None:
        for execution_id in ids:
            ex = self.pipeline.execution(execution_id)
            if ex.status is not Status.FAILED or (execution_id, ex.version) in self.tried:
                continue
            self.tried.add((execution_id, ex.version))
            answers = self.answers.setdefault((execution_id, ex.version), [])
            racing = [
                threading.Thread(target=self._retry, args=(execution_id, user, answers))
                for user in ("U0DEVONCALL", "U0ACMELEAD")
            ]
            for t in racing:
                t.start()
            for t in racing:
                t.join()

    def _retry(self, execution_id: str, user: str, answers: list[tuple[int, str]]) -> None:
        response = self.pipeline.command(f"retry {execution_id}", user_id=user)
        text = json.loads(response["body"])["text"] if response["statusCode"] == 200 else ""
        answers.append((response["statusCode"], text))

    def resumed(self, execution_id: str) -> int:
        return sum(
            1
            for (i, _), answers in self.answers.items()
            if i == execution_id
            for _, text in answers
            if text.startswith("Resuming")
        )


class LateCommits:
    """Counts what the claim rule forbids: a worker ran a step, then another writer moved the run
    first, so the step's outcome was lost and its next record would run it again."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def watch(self, executor: Any) -> None:
        original = executor._commit

        def commit(ex: Any, t: Any, action: str, step_id: str = "") -> Any:
            outcome = original(ex, t, action, step_id)
            if action == "executed" and outcome.action == "conflict":
                self.lost.append(f"{ex.execution_id}:{step_id}@{ex.version}")
            return outcome

        executor._commit = commit


@pytest.mark.timeout(900)  # 40 runs take 2-4 min on 2 cores; CHAOS_RUNS=200 takes longer
def test_every_run_ends_every_effect_once_every_event_once_in_order(chaos, ledger):
    from bot.handlers import worker as worker_handler

    late = LateCommits()
    late.watch(worker_handler.SANDBOX().executor)
    started = time.monotonic()
    ids = start_runs(chaos)
    drill = chaos.command("drill throttle partner-acme faults=throttle=0.1 for=5m", user_id="U0DRILLBOT")
    drill_id = json.loads(drill["body"])["text"].split("execution `")[1].split("`")[0]
    # Plans beside the runs: each must end SUCCEEDED, apply no effect and change no partner resource.
    untouched = production(boto3.session.Session())
    plan_ids = [
        start_plan(chaos, text, f"chaos-plan-{i}")
        for i, text in enumerate(
            ["chaos partner-acme"] * 3 + ["throttle partner-acme", "replay partner-acme"]
        )
    ]
    approvers = Approvers(chaos)
    doomed = set(ids[::DOOMED_EVERY])
    retriers = Retriers(chaos)
    deadline = time.monotonic() + 420
    pending = {*ids, drill_id, *plan_ids}
    while pending and time.monotonic() < deadline:
        approvers.click_waiting(pending)
        retriers.retry_failed(pending & doomed)
        pending = {
            i
            for i in pending
            if (ex := chaos.execution(i)).status not in TERMINAL or (i in doomed and not ex.reopened)
        }
        time.sleep(0.2)
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
    retries = sum(1 for ex in runs.values() for e in ex.timeline if e.kind.value == "step_retry")
    print(
        f"\nchaos: {RUNS} runs in {time.monotonic() - started:.0f}s: {dict(statuses)}; "
        f"effects applied {sum(effects.values())} ({ledger.calls} action calls, {retries} retries, "
        f"{len(approvers.clicked)} approvals clicked by two approvers at once, "
        f"{approvers.again} clicks again after a fault, "
        f"{len(doomed)} runs failed and resumed by two retries at once); "
        f"worker: {worker.records_delivered} records delivered for {worker.records_seen} seen, "
        f"{worker.invocations} invocations, {worker.batches_failed} failed batches; "
        f"crashes {chaos.crashes.count if chaos.crashes else {}}; "
        f"bot table throttled {chaos.bot_faults.stats.throttled} of {chaos.bot_faults.stats.total} requests; "
        f"Slack faults {slack_faults} of {len(chaos.slack.calls)} calls; "
        f"on-failure: worker {worker.sent_to_on_failure}, timeline {timeline.sent_to_on_failure}; "
        f"drill {chaos.execution(drill_id).status.value}"
    )

    assert statuses == {"SUCCEEDED": RUNS}, {
        i: ex.error for i, ex in runs.items() if ex.status is not Status.SUCCEEDED
    }
    expected = {(i, s) for i in ids for s in EFFECT_STEPS}
    assert set(effects) == expected and set(effects.values()) == {1}, "each step's effect exactly once"
    assert not ledger.overlaps, f"step attempts ran twice at once: {ledger.overlaps[:5]}"
    assert not late.lost, f"steps ran whose run another writer moved meanwhile: {late.lost[:5]}"
    assert all(code == 200 for code in approvers.answers), "racing clicks are answered, never a 500"
    for execution_id, ex in runs.items():
        granted = [e for e in ex.timeline if e.kind.value == "approval_granted"]
        asked = [e for e in ex.timeline if e.kind.value == "approval_requested"]
        voted = [e for e in ex.timeline if e.kind.value == "approval_voted"]
        decisions = 1 + (execution_id in doomed)  # a resumed run asks its approvers again
        assert len(granted) == len(asked) == len(voted) == decisions, (
            f"{execution_id}: each approval took one vote, then the quorum"
        )
        assert sorted(v.user for v in ex.approval.votes) == sorted(APPROVERS), (
            f"{execution_id}: both racing approvals count, neither twice: {ex.approval.votes}"
        )
        for vote, grant in zip(voted, granted, strict=True):
            assert {grant.actor, vote.actor} == set(APPROVERS)
        resumed = [e for e in ex.timeline if e.kind.value == "run_resumed"]
        if execution_id in doomed:
            failed = [e for e in ex.timeline if e.kind.value == "run_failed"]
            assert len(failed) == len(resumed) == ex.reopened == 1, (
                f"{execution_id}: failed once, resumed once"
            )
            assert resumed[0].step_id == "second" and ex.expires_at is not None
            assert retriers.resumed(execution_id) == 1, f"{execution_id}: {retriers.answers}"
        else:
            assert not resumed and not ex.reopened
    raced = [a for answers in retriers.answers.values() for a in answers]
    assert raced and all(code == 200 for code, _ in raced), "racing retries are answered, never a 500"
    for answers in retriers.answers.values():
        told = [text for _, text in answers if not text.startswith("Resuming")]
        assert all("being resumed by someone else" in t or "not ended" in t for t in told), told
    assert chaos.execution(drill_id).drill and chaos.execution(drill_id).status in TERMINAL
    plans = {i: chaos.execution(i) for i in plan_ids}
    assert {i: p.status.value for i, p in plans.items()} == dict.fromkeys(plan_ids, "SUCCEEDED")
    assert all(p.kind == "plan" and not p.approval for p in plans.values()), "no plan asks for approval"
    assert production(boto3.session.Session()) == untouched, "plans changed a partner resource"
    for plan_id, p in plans.items():
        messages = [
            m
            for m in chaos.slack.messages(p.channel)
            if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == plan_id
        ]
        assert len(messages) == 1 and messages[0]["text"].startswith("[PLAN]"), f"{plan_id}: one message"
        assert not chaos.slack.thread(p.channel, messages[0]["ts"])[1:], f"{plan_id}: and no thread"
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
    from bot.store.executions import dynamodb_client, executions_table
    from bot.store.slack_posts import PostsStore

    return PostsStore(dynamodb_client(), executions_table()).get(execution_id)
