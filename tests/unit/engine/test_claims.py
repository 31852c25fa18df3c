"""One claim rule for every writer of a transition: no step ever runs twice, whoever is racing."""

from __future__ import annotations

import threading
import time

from bot.actions.base import REGISTRY, ActionContext, StepOutcome
from bot.engine.model import RetryPolicy, Runbook, Step
from bot.exceptions import ActionError, ClaimHeld
from bot.handlers.sweeper import sweep
from bot.store.model import Status
from tests.unit.engine.test_executor import PARTNER, executor, setup, start  # noqa: F401


class FlakyOnce:
    """Fails its first attempt with a retryable code, then blocks until released, counting runs."""

    name = "test.flaky_once"
    outputs: tuple[str, ...] = ()
    always_high_risk = False
    inputs_schema: dict = {"type": "object"}

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.inside = threading.Event()
        self.release = threading.Event()

    def run(self, ctx: ActionContext, inputs: dict) -> StepOutcome:
        self.runs.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ActionError("ThrottlingException", "slow down", retryable=True)
        self.inside.set()
        self.release.wait(10)
        return StepOutcome.done("detected")

    def describe_effect(self, ctx: ActionContext, inputs: dict) -> str:
        return "reads metrics"


def retrying_runbook() -> Runbook:
    step = Step(
        id="detect",
        action="test.flaky_once",
        retry=RetryPolicy(max_attempts=3, base_seconds=0.5, max_seconds=2),
        timeout_seconds=30,
    )
    return Runbook("retrying", "Retry once", "", (), (step,), (), "v1")


def test_the_sweeper_never_wakes_a_retry_whose_worker_is_already_running_it(setup):  # noqa: F811 (the fixture imported above)
    store, catalog, _ = setup
    flaky = FlakyOnce()
    REGISTRY[flaky.name] = flaky
    try:
        catalog.runbooks["retrying"] = retrying_runbook()
        ex = start(store, catalog, name="retrying", eid="rb-retry00001")
        worker = executor(store, catalog)
        worker.advance(store.get(ex.execution_id), lambda: 60_000)  # attempt 1 fails: a backoff
        backing_off = store.get(ex.execution_id)
        assert backing_off.attempt == 2 and backing_off.due_reason == "wake"

        # The stream record arrives after the wake time: worker A claims it and runs attempt 2 ...
        time.sleep(max(0.0, backing_off.due_at_ms / 1000 - time.time()) + 0.05)
        running = threading.Thread(target=worker.advance, args=(backing_off, lambda: 60_000))
        running.start()
        assert flaky.inside.wait(5)
        # ... while the sweeper, firing now, finds the run due.
        report = sweep(store, catalog, executor(store, catalog), backing_off.due_at_ms + 10)
        assert report.moved == {} and report.waiting == 1
        assert store.get(ex.execution_id).version == backing_off.version, "the sweeper wrote nothing"
        flaky.release.set()
        running.join(10)

        done = store.get(ex.execution_id)
        assert done.status is Status.SUCCEEDED
        assert flaky.runs == [1, 2], "attempt 2 ran exactly once"
    finally:
        REGISTRY.pop(flaky.name, None)


def test_a_worker_cannot_run_a_step_the_sweeper_is_moving(setup):  # noqa: F811 (the fixture imported above)
    store, catalog, _ = setup
    ex = start(store, catalog)
    current = store.get(ex.execution_id)
    assert store.claim(ex.execution_id, current.version, "sweeper-x", 10**13, 15_000)
    outcome = executor(store, catalog).advance(current, lambda: 60_000)
    assert outcome.action == "claimed-elsewhere"
    assert store.get(ex.execution_id).version == current.version


def test_a_click_loses_cleanly_to_a_live_claim(setup):  # noqa: F811 (the fixture imported above)
    store, catalog, _ = setup
    ex = start(store, catalog)
    current = store.get(ex.execution_id)
    assert store.claim(ex.execution_id, current.version, "worker-a", 10**13, 60_000)
    from bot.engine import machine

    t = machine._transition(current, 10**13, Status.RUNNING, [], [])
    try:
        store.move(ex.execution_id, t, "click-U0LEAD", 10**13)
    except ClaimHeld as held:
        assert "being moved by another worker" in str(held)
    else:
        raise AssertionError("a move must not pass a live claim")
    assert store.get(ex.execution_id).version == current.version
