"""Chaos: 200 runs (and a few plans beside them) through the local pipeline with every fault at once.

Each stream record is delivered 1-3 times, batches are split and retried, the worker dies at
random points (before a batch, between a step's effect and its commit, after its commits), Slack
answers 429/5xx to 20% of calls and DynamoDB throttles 10% of the bot's own requests. Every fifth
run fails at its risky step and is resumed by two people's `/runbook retry` at once. Every seventh
run belongs to a partner whose guard alarm is in ALARM: its risky step pauses before its effect
and the approvers resume it, abort it, or race each other (Resume against Abort: one wins, the
other is told nothing changed), while the alarm function's state-change events ask the guarded
runs to pause as the worker runs them. Every run must end SUCCEEDED (an aborted one FAILED with
GuardAborted), every step's effect must happen exactly once (a paused step's only after its
resume, an aborted one's never), every timeline event must reach the channel once and in order,
and nothing may land in an on-failure queue.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from bot.actions.base import REGISTRY, ActionContext, StepOutcome, register
from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.store import keys
from bot.store.model import TERMINAL, Status
from tests.alarms import latency_alarm
from tests.integration.test_drill_isolation import production

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = int(os.environ.get("CHAOS_RUNS", "200"))
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
# The same steps for partner-guarded, whose risky step writes a table of the partner's (as a
# replay does): the run takes that table's lock, which is how the alarm function finds it. Its
# timeout is a paging step's (30 s, not 5): the time between a resume and the worker that runs
# the step again counts against it, and a pause after its timeout fails the step (StepTimedOut).
GUARDED_RUNBOOK = (
    CHAOS_RUNBOOK.replace("name: chaos\n", "name: chaos-guarded\n")
    .replace(
        "  doomed:",
        "  table: {type: string, description: the partner table the risky step writes}\n  doomed:",
    )
    .replace(
        "{id: second, action: chaos.effect, risk: high, inputs: {",
        '{id: second, action: chaos.locked, risk: high, inputs: {table: "{{ params.table }}", ',
    )
    .replace(
        'fail_until_resumed: "{{ params.doomed }}"}, timeout_seconds: 5}',
        'fail_until_resumed: "{{ params.doomed }}"}, timeout_seconds: 30}',
    )
)
EFFECT_STEPS = ("first", "flaky", "second", "third")
DOOMED_EVERY = 5  # every fifth run fails at `second` until `/runbook retry` resumes it
GUARDED_EVERY = 7  # every seventh run (never a doomed one) is partner-guarded's: `second` pauses
LOCKED = "chaos.locked"  # the chaos effect where it writes a partner table (a changing action)
APPROVERS = ("U0ACMELEAD", "U0ACMESRE")  # both chaos partners need both: approvals {high: 2}
GUARDIAN = "U0GUARDIAN"  # partner-guarded's third approver: the one who aborts in a race
GUARD_FIRING = "chaos-guard-latency"  # in ALARM for the whole test: DescribeAlarms finds it
GUARD_EVENT = "chaos-guard-errors"  # its state-change event reaches the alarm function only
GUARD_EVENTS = 4  # alarm-function events fired at a guarded run the moment it may run `second`
# partner-guarded: partner-acme's twin whose guard alarm is firing. Each guarded run writes its
# own lane table (a run locks the tables it writes), so they never wait for each other.
GUARDED_PARTNER = """\
# yaml-language-server: $schema=../partner.schema.json
name: partner-guarded
display_name: Guarded Logistics
region: us-east-1
account_id: "123456789012"
role_arn: ""
sla: {{response_minutes: 15, resolution_minutes: 120, warn_at: 0.8}}
channels: [C0ACMEOPS]
approvers: [U0ACMELEAD, U0ACMESRE, {guardian}]
approval_timeout_minutes: 30
approvals: {{high: 2}}
guard_alarms: [chaos-guard-*]
tables:
{tables}
"""


class Ledger:
    """An idempotent effect: applying the same idempotency key again changes nothing.

    It also watches for what must never happen: two executions of one step attempt at once.
    """

    name = "chaos.effect"
    outputs: tuple[str, ...] = ("applied",)
    always_high_risk = False
    inputs_schema: dict = {"type": "object"}
    # It checks its guard alarms at its one safe point, before its effect, as a replay does
    # before each page (bot/actions/guard.py); a partner's guard alarms guard its risky steps.
    guardable = True

    def __init__(self) -> None:
        self.applied: dict[str, tuple[str, str]] = {}  # idempotency key -> (execution, step)
        self.applied_at: dict[tuple[str, str], float] = {}  # (execution, step) -> when, epoch ms
        self.paused: Counter[tuple[str, str]] = Counter()  # (execution, step) -> guard pauses
        self.calls = 0
        self.in_flight: set[str] = set()
        self.overlaps: list[str] = []
        self.lock = threading.Lock()

    def run(self, ctx: ActionContext, inputs: dict) -> StepOutcome:
        from bot.actions.guard import guard_tripped
        from bot.exceptions import ActionError

        key = ctx.idempotency_key
        with self.lock:
            self.calls += 1
            if key in self.in_flight:
                self.overlaps.append(key)
            self.in_flight.add(key)
        try:
            tripped = guard_tripped(ctx)
            if tripped is not None:
                with self.lock:
                    self.paused[(ctx.execution_id, ctx.step_id)] += 1
                return StepOutcome.pause({"applied": False}, tripped, "stopped before its effect")
            time.sleep(0.02)  # long enough for a racing worker or sweeper to show itself
            if inputs.get("fail_first") and ctx.attempt == 1:
                raise ActionError("ThrottlingException", "injected first-attempt throttle", retryable=True)
            first_life = key == keys.idempotency_key(ctx.execution_id, ctx.step_id, ctx.attempt)
            if inputs.get("fail_until_resumed") and first_life:
                raise ActionError("ValidationException", "injected fault until resumed", retryable=False)
            with self.lock:
                if key not in self.applied:
                    self.applied[key] = (ctx.execution_id, ctx.step_id)
                    self.applied_at[(ctx.execution_id, ctx.step_id)] = time.time() * 1000
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
    REGISTRY[LOCKED] = action  # one ledger: every effect of every run is counted in one place
    yield action
    REGISTRY.pop("chaos.effect", None)  # other tests list the registry's actions
    REGISTRY.pop(LOCKED, None)


@pytest.fixture(scope="module")
def chaos(runbooks_copy, ledger):
    lanes = "\n".join(
        f"  lane{i}: {{name: {lane(i)}, partition_key: {{name: pk, type: S}}}}"
        for i in range(RUNS)
        if role(i) == "guarded"
    )
    assert lanes, f"CHAOS_RUNS={RUNS} leaves no run to partner-guarded: run at least 4"
    runbooks = runbooks_copy(
        acme="approvals: {high: 2}",
        files={
            "chaos.yaml": CHAOS_RUNBOOK,
            "chaos-guarded.yaml": GUARDED_RUNBOOK,
            "partners/partner-guarded.yaml": GUARDED_PARTNER.format(guardian=GUARDIAN, tables=lanes),
        },
    )
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
    # chaos.locked writes the table its `table` input names, as dynamodb.replay does: its run
    # takes that table's lock, and the alarm function finds the partner's active runs by them.
    # (Only partner-guarded's runs lock. That was chosen while moto rolled a whole table back when a
    # transaction failed, undoing other runs' writes; the embedded AWS now serves moto's DynamoDB
    # requests one at a time (bot/local/aws.py), so every run could lock again.)
    with pytest.MonkeyPatch.context() as patch, LocalPipeline(options) as pipeline:
        from bot.demo import seed_demo
        from bot.engine import starts

        patch.setattr(starts, "CHANGING_ACTIONS", starts.CHANGING_ACTIONS | {LOCKED})
        session = boto3.session.Session()
        seed_demo(session)  # the drill beside the runs rehearses on the demo's drill table
        cloudwatch = session.client("cloudwatch")
        latency_alarm(cloudwatch, GUARD_FIRING, "ALARM", "Threshold Crossed: 1 datapoint [412.0] > 250.0")
        latency_alarm(cloudwatch, GUARD_EVENT)
        yield pipeline


def role(i: int) -> str:
    """What run `i` rehearses: doomed (fails until retried), guarded (pauses), or plain."""
    if i % DOOMED_EVERY == 0:
        return "doomed"
    if i % GUARDED_EVERY == 3:
        return "guarded"
    return "plain"


def lane(i: int) -> str:
    """The table guarded run `i` writes: its own, so runs never wait for each other's table lock."""
    return f"chaos-lane-{i}"


AGAIN = Counter[str]()  # starts typed again after "Try again" (the store failed under the faults)


def start(
    pipeline: LocalPipeline, text: str, trigger_id: str, marker: str, user_id: str = "U0DEVONCALL"
) -> str:
    """`/runbook <text>`; the id after `marker` in the answer. A start that answers "Try again"
    (the store failed under the faults; nothing was started) is typed again, as a person would;
    the same trigger names the same run."""
    for attempt in range(4):
        response = pipeline.command(text, trigger_id=trigger_id, user_id=user_id)
        answer = json.loads(response["body"])["text"] if response["statusCode"] == 200 else str(response)
        if marker in answer or "Try again" not in answer or attempt == 3:
            break
        AGAIN[text.split(maxsplit=1)[0]] += 1
        time.sleep(0.5)
    assert marker in answer, f"{text}: {answer}"
    return str(answer.split(marker)[1].split("`")[0])


def start_plan(pipeline: LocalPipeline, text: str, trigger_id: str) -> str:
    return start(pipeline, f"plan {text}", trigger_id, "plan `")


def start_runs(pipeline: LocalPipeline) -> list[str]:
    """Every run, partner-guarded's first, while the table is small (moto copies a whole table
    for each transaction, and a run's lock is taken in one)."""
    texts = {
        i: {
            "guarded": f"chaos-guarded partner-guarded table={lane(i)}",
            "doomed": "chaos partner-acme doomed=true",
        }.get(role(i), "chaos partner-acme")
        for i in range(RUNS)
    }
    ids = {
        i: start(pipeline, texts[i], f"chaos-{i}", "execution `")
        for i in sorted(texts, key=lambda i: role(i) != "guarded")
    }
    return [ids[i] for i in range(RUNS)]


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

    def click_waiting(self, ids: set[str], leave: set[str] = frozenset()) -> None:
        """Approve (or resume) what waits, but the guard pauses of the runs in `leave`."""
        for execution_id in ids:
            ex = self.pipeline.execution(execution_id)
            if ex.status is not Status.AWAITING_APPROVAL or ex.approval is None:
                continue
            if ex.approval.kind == "guard" and execution_id in leave:
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


@dataclass
class Race:
    """Resume and Abort pressed at once on one guard pause: who was told what."""

    execution_id: str
    asked_at_ms: int  # the pause's approval_requested
    answers: dict[str, Any] = field(default_factory=dict)  # "resume": click, "abort": submission
    started: float = 0.0  # epoch seconds


class Guardians:
    """The guard pauses the Approvers leave alone. `abort`: the lead aborts on their own (Abort,
    then the reason dialog; the click aborts without a reason when Slack does not open it).
    `contest`: the lead resumes (1 of 2), then the SRE's Resume and the guardian's Abort land at
    the same moment: exactly one of them decides, the other is told that nothing changed."""

    def __init__(self, pipeline: LocalPipeline, roles: dict[str, str]) -> None:
        self.pipeline = pipeline
        self.roles = roles
        self.tried: dict[tuple[str, int], float] = {}
        self.races: list[Race] = []
        self.unraced: list[str] = []  # contests whose Abort click decided (no dialog opened)

    def decide_paused(self, ids: set[str]) -> None:
        for execution_id in ids:
            if self.roles.get(execution_id) not in {"abort", "contest"}:
                continue
            ex = self.pipeline.execution(execution_id)
            if (
                ex.status is not Status.AWAITING_APPROVAL
                or ex.approval is None
                or ex.approval.kind != "guard"
            ):
                continue
            asked = (execution_id, ex.approval.requested_at_ms)
            if time.monotonic() - self.tried.get(asked, 0) < 2:
                continue  # a click that changed nothing (a fault) is made again a moment later
            self.tried[asked] = time.monotonic()
            value = json.dumps(
                {"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.approval.version}
            )
            if self.roles[execution_id] == "abort":
                dialog = self._open_abort(value, APPROVERS[0])
                if dialog:
                    self.pipeline.submit_view(dialog, {"note": "partner still paging"})
                continue
            if not ex.approval.voted(APPROVERS[0]):
                self.pipeline.click("approve", value, user_id=APPROVERS[0])
                if not (self.pipeline.execution(execution_id).approval or ex.approval).voted(APPROVERS[0]):
                    continue
            dialog = self._open_abort(value, GUARDIAN)
            if not dialog:
                if self.pipeline.execution(execution_id).status is not Status.AWAITING_APPROVAL:
                    self.unraced.append(execution_id)
                continue
            race = Race(execution_id, ex.approval.requested_at_ms, started=time.time())
            racing = [
                threading.Thread(target=self._resume, args=(race, value)),
                threading.Thread(target=self._abort, args=(race, dialog)),
            ]
            for t in racing:
                t.start()
            for t in racing:
                t.join()
            self.races.append(race)

    def _open_abort(self, value: str, user: str) -> str:
        """Abort: the reason dialog's id, or "" when Slack did not open it (then the click decided)."""
        before = {v["id"] for v in self.pipeline.slack.open_views(user)}
        self.pipeline.click("reject", value, user_id=user)
        opened = [v["id"] for v in self.pipeline.slack.open_views(user) if v["id"] not in before]
        return str(opened[-1]) if opened else ""

    def _resume(self, race: Race, value: str) -> None:
        race.answers["resume"] = self.pipeline.click("approve", value, user_id=APPROVERS[1])

    def _abort(self, race: Race, dialog: str) -> None:
        race.answers["abort"] = self.pipeline.submit_view(dialog, {"note": "latency still climbing"})


class AlarmEvents:
    """The guard alarm's `CloudWatch Alarm State Change` reaches the alarm function while guarded
    runs are about to run (APPROVED at `second`, or running it): it races the worker that claims
    the step. Each request it makes is obeyed at the step's safe point, or arrives after it."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        self.pipeline = pipeline
        self.fired: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.pauses: list[dict[str, Any]] = []

    def fire_at_running(self, ids: set[str]) -> None:
        for execution_id in ids - self.fired:
            if len(self.fired) >= GUARD_EVENTS:
                return
            ex = self.pipeline.execution(execution_id)
            if ex.cursor == "second" and ex.status in {Status.APPROVED, Status.RUNNING}:
                self.fired.add(execution_id)
                thread = threading.Thread(target=self._fire)
                thread.start()
                self.threads.append(thread)

    def _fire(self) -> None:
        fired_at_ms = time.time() * 1000
        answer = self.pipeline.fire_alarm(GUARD_EVENT)
        self.pauses.extend({**pause, "fired_at_ms": fired_at_ms} for pause in answer["pauses"])

    def join(self) -> list[dict[str, Any]]:
        for t in self.threads:
            t.join()
        return [p for p in self.pauses if p["requested"]]


class StuckTimers:
    """A worker killed between a step's effect and its commit leaves its claim behind: the record
    Lambda delivers again finds the step claimed, and the sweeper restarts the step once its
    timeout and grace have passed (docs/ARCHITECTURE.md: stuck steps). For a plan's or the
    drill's step (a 300 s check waits 6 minutes) the suite cannot wait that long: once only they
    are left, a sweep runs as the scheduled one would when their timers are due.

    That sweep runs ahead of the clock, so the run's `updated_at_ms` lies in the future after it:
    how long a run has stood still is measured here, by the version each run was first seen at
    (a run killed again after its restart is swept again)."""

    def __init__(self, pipeline: LocalPipeline) -> None:
        self.pipeline = pipeline
        self.seen: dict[str, tuple[int, float]] = {}
        self.swept: set[str] = set()

    def sweep(self, pending: set[str]) -> None:
        from bot.handlers import sweeper

        stuck = []
        for i in pending:
            ex = self.pipeline.execution(i)
            version, since = self.seen.get(i, (-1, 0.0))
            if ex.version != version:
                self.seen[i] = (ex.version, time.monotonic())
                continue
            still = time.monotonic() - since > 20
            if still and ex.status is Status.RUNNING and ex.due_reason == "stuck" and ex.due_at_ms:
                stuck.append(ex)
        if not stuck:
            return
        services = sweeper.SANDBOX()
        sweeper.sweep(
            services.store, services.catalog, services.executor, max(ex.due_at_ms or 0 for ex in stuck) + 1
        )
        self.swept |= {ex.execution_id for ex in stuck}


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
    drill_id = start(
        chaos,
        "drill throttle partner-acme faults=throttle=0.1 for=5m",
        "chaos-drill",
        "execution `",
        "U0DRILLBOT",
    )
    # Plans beside the runs: each must end SUCCEEDED, apply no effect and change no partner resource.
    untouched = production(boto3.session.Session())
    plan_ids = [
        start_plan(chaos, text, f"chaos-plan-{i}")
        for i, text in enumerate(
            ["chaos partner-acme"] * 3 + ["throttle partner-acme", "replay partner-acme"]
        )
    ]
    approvers = Approvers(chaos)
    doomed = {ids[i] for i in range(RUNS) if role(i) == "doomed"}
    guarded = [ids[i] for i in range(RUNS) if role(i) == "guarded"]
    roles = {run: ("resume", "contest", "abort", "contest")[j % 4] for j, run in enumerate(guarded)}
    guardians = Guardians(chaos, roles)
    alarm_events = AlarmEvents(chaos)
    retriers = Retriers(chaos)
    stuck_timers = StuckTimers(chaos)
    deadline = time.monotonic() + 420
    pending = {*ids, drill_id, *plan_ids}
    while pending and time.monotonic() < deadline:
        approvers.click_waiting(pending, leave={r for r, what in roles.items() if what != "resume"})
        guardians.decide_paused(pending & set(guarded))
        alarm_events.fire_at_running(pending & set(guarded))
        retriers.retry_failed(pending & doomed)
        if pending and pending <= {*plan_ids, drill_id}:
            stuck_timers.sweep(pending)
        pending = {
            i
            for i in pending
            if (ex := chaos.execution(i)).status not in TERMINAL or (i in doomed and not ex.reopened)
        }
        time.sleep(0.2)
    assert not pending, f"{len(pending)} runs never ended: " + "; ".join(
        _stuck(
            chaos.execution(i),
            roles.get(i, "doomed" if i in doomed else "plan or drill" if i not in ids else ""),
        )
        for i in sorted(pending)[:3]
    )
    requested = alarm_events.join()
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
    pauses = {i: [e for e in ex.timeline if _guard_pause(e)] for i, ex in runs.items()}
    aborted = {i for i, ex in runs.items() if (ex.error or {}).get("code") == "GuardAborted"}
    obeyed = {
        i
        for i, events in pauses.items()
        for e in events
        if f"guard alarm {GUARD_EVENT} entered ALARM" in e.summary
    }
    races = [r for r in guardians.races if _decisions(runs[r.execution_id], r.asked_at_ms)]
    print(
        f"\nchaos: {RUNS} runs in {time.monotonic() - started:.0f}s: {dict(statuses)}; "
        f"effects applied {sum(effects.values())} ({ledger.calls} action calls, {retries} retries, "
        f"{len(approvers.clicked)} approvals clicked by two approvers at once, "
        f"{approvers.again} clicks again after a fault, "
        f"{len(doomed)} runs failed and resumed by two retries at once; "
        f"guarded: {len(guarded)} runs paused {sum(len(p) for p in pauses.values())} times, "
        f"{len(guarded) - len(aborted)} resumed, {len(aborted)} aborted, {len(races)} Resume/Abort races "
        f"({sum(1 for r in races if _winner(runs[r.execution_id], r) == 'abort')} won by Abort), "
        f"{len(requested)} pauses requested by {len(alarm_events.threads)} alarm events "
        f"({len(obeyed)} obeyed at a safe point)); "
        f"{len(stuck_timers.swept)} plans or drills swept past a dead worker's stuck timer; "
        f"starts typed again after a store fault {dict(AGAIN)}; "
        f"worker: {worker.records_delivered} records delivered for {worker.records_seen} seen, "
        f"{worker.invocations} invocations, {worker.batches_failed} failed batches; "
        f"crashes {chaos.crashes.count if chaos.crashes else {}}; "
        f"bot table throttled {chaos.bot_faults.stats.throttled} of {chaos.bot_faults.stats.total} requests; "
        f"Slack faults {slack_faults} of {len(chaos.slack.calls)} calls; "
        f"on-failure: worker {worker.sent_to_on_failure}, timeline {timeline.sent_to_on_failure}; "
        f"drill {chaos.execution(drill_id).status.value}"
    )

    # Every run succeeds but the aborted ones, which end FAILED with GuardAborted (README: Guard alarms).
    assert {i for i, ex in runs.items() if ex.status is not Status.SUCCEEDED} == aborted, {
        i: ex.error for i, ex in runs.items() if ex.status is not Status.SUCCEEDED
    }
    assert all(runs[i].status is Status.FAILED for i in aborted)
    assert {r for r, what in roles.items() if what == "abort"} <= aborted <= set(guarded), aborted
    expected = {(i, s) for i in ids for s in EFFECT_STEPS if i not in aborted or s in ("first", "flaky")}
    assert set(effects) == expected and set(effects.values()) == {1}, "each step's effect exactly once"
    assert not ledger.overlaps, f"step attempts ran twice at once: {ledger.overlaps[:5]}"
    assert not late.lost, f"steps ran whose run another writer moved meanwhile: {late.lost[:5]}"
    assert all(code == 200 for code in approvers.answers), "racing clicks are answered, never a 500"
    for execution_id, ex in runs.items():
        asked = [e for e in ex.timeline if e.kind.value == "approval_requested"]
        decisions = 1 + (execution_id in doomed) + len(pauses[execution_id])  # a retry, a pause ask again
        assert len(asked) == decisions, f"{execution_id}: asked {len(asked)} times, not {decisions}"
        for request in asked:
            decided = _decisions(ex, request.at_ms)
            assert len(decided) == 1, f"{execution_id}: one decision per approval, not {decided}"
            voted = [e for e in _answers(ex, request.at_ms) if e.kind.value == "approval_voted"]
            if decided[0].kind.value == "approval_granted":  # a quorum of two: one vote, then the grant
                assert len(voted) == 1 and voted[0].actor != decided[0].actor, (
                    f"{execution_id}: each approval took one vote, then the quorum"
                )
        if execution_id not in aborted:
            assert sorted(v.user for v in ex.approval.votes) == sorted(APPROVERS), (
                f"{execution_id}: both racing approvals count, neither twice: {ex.approval.votes}"
            )
        # A paused step's effect happens after its last resume; an aborted one's never.
        paused_at = [e.at_ms for e in pauses[execution_id]]
        if execution_id in guarded:
            assert paused_at, f"{execution_id}: the firing guard alarm never paused it"
            resumes = [
                e
                for e in ex.timeline
                if e.kind.value == "approval_granted" and e.summary.startswith("resumed")
            ]
            if execution_id in aborted:
                assert len(resumes) == len(paused_at) - 1 and ex.error["step"] == "second"
                assert ex.error["by"] in (APPROVERS[0], GUARDIAN), ex.error
                assert ex.steps.get("second") is None or ex.steps["second"].outcome != "succeeded"
            else:
                assert len(resumes) == len(paused_at), f"{execution_id}: each pause resumed once"
                assert ledger.applied_at[(execution_id, "second")] >= max(e.at_ms for e in resumes), (
                    f"{execution_id}: the guarded step ran before it was resumed"
                )
        else:
            assert not paused_at, f"{execution_id}: paused without a guard alarm: {pauses[execution_id]}"
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
    for race in races:  # Resume against Abort: exactly one decides, the other is told nothing changed
        ex = runs[race.execution_id]
        winner = _winner(ex, race)
        if winner == "abort":
            assert race.execution_id in aborted
            told = [
                str(c.args.get("text"))
                for c in chaos.slack.calls
                if c.method == "chat.postEphemeral"
                and c.args.get("user") == APPROVERS[1]
                and c.at >= race.started
            ]
            assert told and all("nothing changed" in t for t in told), f"{race.execution_id}: {told}"
        else:
            answer = race.answers["abort"]
            assert answer["status"] == 200 and answer["answer"].get("response_action") == "update", answer
            said = json.dumps(answer["view"])
            # Already resumed; or, once the resumed step paused again, the button is out of date; or
            # the Resume was still being written when the Abort read the run (a lost conditional write).
            assert "Nothing changed" in said and any(
                why in said for why in ("already approved", "out of date", "is changing right now")
            ), said
    assert all(r.answers["resume"]["statusCode"] == 200 for r in guardians.races)
    for execution_id in aborted:
        reason = runs[execution_id].error.get("reason", "")
        assert reason in ("partner still paging", "latency still climbing") or "could not open" in reason, (
            reason
        )
    for pause in requested:
        # The alarm function's request is obeyed at the step's next safe point; or it came after
        # the last one (it stays on the item); or a pause for the firing alarm took it along.
        ex = runs[pause["execution_id"]]
        assert (
            pause["execution_id"] in obeyed
            or ex.pause_request is not None
            or any(e.at_ms >= pause["fired_at_ms"] for e in pauses[pause["execution_id"]])
        ), pause
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


def _stuck(ex: Any, what: str) -> str:
    """Where a run that never ended stands, for the failure message."""
    approval = ex.approval
    waits = (
        f"approval {approval.kind or 'step'} of {approval.step_id} v{approval.version}, "
        f"votes {[v.user for v in approval.votes]}, decision {approval.decision!r}"
        if approval
        else "no approval"
    )
    last = [(e.seq, e.kind.value, e.actor, e.summary[:80]) for e in ex.timeline[-4:]]
    return (
        f"{ex.execution_id} ({what or 'plain'} {ex.partner}) {ex.status.value} at {ex.cursor} v{ex.version}, "
        f"{waits}, pause_request {ex.pause_request}, due {ex.due_reason} {ex.due_at_ms}, last events {last}"
    )


def _guard_pause(event: Any) -> bool:
    return event.kind.value == "approval_requested" and "guard_alarms" in (event.figures or {})


def _answers(ex: Any, asked_at_ms: int) -> list[Any]:
    """The events that answer the approval asked at `asked_at_ms`: until the next one is asked."""
    after = [e for e in ex.timeline if e.at_ms >= asked_at_ms]
    asked = [i for i, e in enumerate(after) if e.kind.value == "approval_requested"]
    return after[asked[0] + 1 : asked[1] if len(asked) > 1 else None] if asked else []


def _decisions(ex: Any, asked_at_ms: int) -> list[Any]:
    decisive = {"approval_granted", "approval_rejected", "approval_expired"}
    return [e for e in _answers(ex, asked_at_ms) if e.kind.value in decisive]


def _winner(ex: Any, race: Race) -> str:
    (decision,) = _decisions(ex, race.asked_at_ms)
    return "abort" if decision.kind.value == "approval_rejected" else "resume"


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
