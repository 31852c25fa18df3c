"""The worker's shell on the real store (moto): exactly once under duplicates, races and crashes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from bot.actions.base import REGISTRY, ActionContext, StepOutcome
from bot.engine.executor import Executor
from bot.engine.model import Runbook, Step
from bot.engine.starts import new_execution
from bot.partners.model import KeyAttribute, Partner, PartnerTable, Sla
from bot.store.executions import ExecutionStore
from bot.store.model import EventKind, Status
from tests.conftest import CountingClient

T0 = 1_700_000_000


class Counter:
    """An action whose effect we can count: each run increments a per-key counter."""

    name = "test.count"
    outputs: tuple[str, ...] = ("count", "blob")
    always_high_risk = False
    inputs_schema: dict[str, Any] = {"type": "object"}

    def __init__(self) -> None:
        self.effects: dict[str, int] = {}
        self.lock = threading.Lock()

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        with self.lock:
            self.effects[ctx.step_id] = self.effects.get(ctx.step_id, 0) + 1
        blob = "x" * int(inputs.get("blob_bytes", 0))
        return StepOutcome.done(f"{ctx.step_id} done", {"count": self.effects[ctx.step_id], "blob": blob})

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return "counts"


COUNTER = Counter()
REGISTRY.setdefault(COUNTER.name, COUNTER)


@dataclass
class Errors:
    retryable: set[str] = field(default_factory=lambda: {"ThrottlingException"})

    def is_retryable(self, code: str) -> bool:
        return code in self.retryable

    def entry(self, code: str) -> None:
        return None


@dataclass
class Catalog:
    runbooks: dict[str, Runbook]
    partners: dict[str, Partner]
    errors: Errors = field(default_factory=Errors)


PARTNER = Partner(
    name="partner-test",
    display_name="Test Partner",
    region="us-east-1",
    account_id="123456789012",
    role_arn="",
    sla=Sla(15, 120),
    channels=("C0TEST",),
    approvers=("U0LEAD",),
    tables={"orders": PartnerTable("orders", "test-orders", KeyAttribute("pk", "S"))},
)


def five_steps(blob_bytes: int = 0, name: str = "five") -> Runbook:
    steps = tuple(
        Step(id=f"s{i}", action="test.count", inputs={"blob_bytes": blob_bytes}) for i in range(1, 6)
    )
    return Runbook(name, "Five cheap steps", "", (), steps, (), "v1")


@pytest.fixture
def setup(executions_table: str):
    COUNTER.effects.clear()
    client = CountingClient(boto3.client("dynamodb"))
    store = ExecutionStore(client, executions_table)
    runbook = five_steps()
    catalog = Catalog(
        {runbook.name: runbook, "big": five_steps(blob_bytes=60_000, name="big")}, {PARTNER.name: PARTNER}
    )
    return store, catalog, client


def start(store: ExecutionStore, catalog: Catalog, name: str = "five", eid: str = "rb-exec000001"):
    ex = new_execution(
        eid,
        catalog.runbooks[name],
        PARTNER,
        {},
        requested_by="U0REQ",
        channel="C0TEST",
        now_ms=T0 * 1000,
        trigger="slash",
    )
    assert store.create(ex)
    return ex


def executor(store, catalog, **kw) -> Executor:
    return Executor(store, catalog, sessions=lambda p, d: None, **kw)


def drive(store, ex_id, ex_executor, deliveries: int = 1, limit: int = 50):
    """Feed the executor each new state as a stream would, `deliveries` times per record."""
    for _ in range(limit):
        current = store.get(ex_id)
        if current.status.terminal:
            return current
        for _ in range(deliveries):
            ex_executor.advance(current, lambda: 60_000)
    raise AssertionError("run did not finish")


def test_five_step_run_succeeds_with_two_writes_per_step(setup):
    store, catalog, client = setup
    ex = start(store, catalog)
    before = client.writes
    done = drive(store, ex.execution_id, executor(store, catalog))
    assert done.status is Status.SUCCEEDED and done.version == 5
    assert COUNTER.effects == {f"s{i}": 1 for i in range(1, 6)}
    assert (client.writes - before) / 5 <= 2


def test_duplicate_records_add_no_writes_and_no_steps(setup):
    store, catalog, client = setup
    ex = start(store, catalog)
    before = client.writes
    done = drive(store, ex.execution_id, executor(store, catalog), deliveries=3)
    assert done.status is Status.SUCCEEDED
    assert COUNTER.effects == {f"s{i}": 1 for i in range(1, 6)}
    assert client.writes - before == 10


def test_stale_record_is_skipped(setup):
    store, catalog, _ = setup
    ex = start(store, catalog)
    worker = executor(store, catalog)
    worker.advance(ex, lambda: 60_000)
    outcome = worker.advance(ex, lambda: 60_000)  # the v0 record again, after v1 was written
    assert outcome.action == "stale" and COUNTER.effects == {"s1": 1}


def test_two_workers_racing_on_one_record_run_the_step_once(setup):
    store, catalog, _ = setup
    ex = start(store, catalog)
    barrier = threading.Barrier(4)
    outcomes = []

    def race():
        barrier.wait()
        outcomes.append(executor(store, catalog).advance(ex, lambda: 60_000).action)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert COUNTER.effects == {"s1": 1}
    assert outcomes.count("executed") == 1


class Crash(BaseException):
    """A worker dying between an action's effect and its commit (not an Exception: nothing catches it)."""


@pytest.mark.parametrize("crash_at", ["s1", "s2", "s3", "s4", "s5"])
def test_crash_between_effect_and_commit_is_recovered_by_the_sweeper(setup, crash_at):
    from bot.handlers.sweeper import sweep

    store, catalog, _ = setup
    ex = start(store, catalog)
    crashed = []

    def crash_once(point, current, step):
        if step.id == crash_at and not crashed:
            crashed.append(step.id)
            raise Crash

    worker = executor(store, catalog, crash_hook=crash_once)
    current = ex
    for _ in range(20):
        current = store.get(ex.execution_id)
        if current.status.terminal:
            break
        try:
            worker.advance(current, lambda: 60_000)
        except Crash:
            # Lambda retries the batch: the claim is still held, so the retry does nothing ...
            assert worker.advance(store.get(ex.execution_id), lambda: 60_000).action == "claimed-elsewhere"
            # ... until the step's deadline and its worker's lease pass; then the sweeper restarts it.
            stuck = store.get(ex.execution_id)
            lease = store.claim_lease(stuck.execution_id, stuck.version)
            assert lease is not None
            if lease > stuck.due_at_ms:
                assert sweep(store, catalog, worker, stuck.due_at_ms + 1).waiting == 1
            report = sweep(store, catalog, worker, max(stuck.due_at_ms, lease) + 1)
            assert report.moved == {"stuck": 1}
    done = store.get(ex.execution_id)
    assert done.status is Status.SUCCEEDED
    # The crashed attempt's effect happened once, its restart once more: the idempotency key
    # (same attempt number) is what lets a real action recognise its own earlier effect.
    assert COUNTER.effects[crash_at] == 2
    assert all(COUNTER.effects[f"s{i}"] == 1 for i in range(1, 6) if f"s{i}" != crash_at)
    retries = [e for e in done.timeline if e.kind is EventKind.STEP_RETRY]
    assert len(retries) == 1 and retries[0].step_id == crash_at


def test_large_outputs_spill_and_keep_the_item_small(setup):
    store, catalog, client = setup
    ex = start(store, catalog, name="big", eid="rb-big0000001")
    done = drive(store, ex.execution_id, executor(store, catalog))
    assert done.status is Status.SUCCEEDED
    assert all(r.spilled for r in done.steps.values())
    item = client.get_item(
        TableName=store.table, Key={"pk": {"S": f"EXEC#{ex.execution_id}"}, "sk": {"S": "STATE"}}
    )
    assert len(str(item["Item"])) < 100_000  # five 60 KB outputs would be 300 KB inline
    assert len(store.outputs(ex.execution_id, done.steps["s3"])["blob"]) == 60_000


def test_a_run_whose_record_is_still_queued_is_not_restarted_until_the_stream_gave_up(setup):
    from bot.handlers.sweeper import QUEUED_PATIENCE_MS, sweep

    store, catalog, _ = setup
    ex = start(store, catalog)
    worker = executor(store, catalog)
    queued = store.get(ex.execution_id)
    report = sweep(store, catalog, worker, queued.due_at_ms + 1)
    assert report.waiting == 1 and report.moved == {}
    assert store.get(ex.execution_id).version == queued.version  # nothing written
    report = sweep(store, catalog, worker, queued.updated_at_ms + QUEUED_PATIENCE_MS + 1)
    assert report.moved == {"stuck": 1}  # a lost record: the sweeper drives the run again
