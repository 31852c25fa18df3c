"""The alarm handler's guard pauses: a guard alarm entering ALARM finds the partner's running
guarded steps through their lock items and sets a pause request on the state item, without
moving its version; the worker's guard check obeys it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bot.catalog import Catalog, load_catalog
from bot.engine.starts import new_execution, run_locks
from bot.handlers.alarm import pause_for_alarm
from bot.store import keys
from bot.store.executions import ExecutionStore
from bot.store.model import Execution, Status

NOW = 1_795_000_000_000
ALARM = "acme-orders-latency"


def event(name: str = ALARM, state: str = "ALARM", account: str = "") -> dict[str, Any]:
    return {
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": account,
        "detail": {"alarmName": name, "state": {"value": state, "reason": "Threshold Crossed: p99 412 ms"}},
    }


@pytest.fixture
def catalog() -> Catalog:
    base = load_catalog()
    acme = dataclasses.replace(base.partners["partner-acme"], guard_alarms=("acme-orders-*",))
    return dataclasses.replace(base, partners={**base.partners, "partner-acme": acme})


@pytest.fixture
def store(executions_table: str) -> ExecutionStore:
    return ExecutionStore()


def started(store: ExecutionStore, catalog: Catalog, eid: str, **state: Any) -> Execution:
    """A replay run of partner-acme holding its locks, in the given state."""
    runbook, partner = catalog.runbooks["replay"], catalog.partners["partner-acme"]
    params = {"table": "orders", "budget_share": 0.5}
    ex = new_execution(
        eid, runbook, partner, params, requested_by="U0DEV", channel="C0ACMEOPS", now_ms=NOW, trigger="slash"
    )
    ex = dataclasses.replace(ex, **{"status": Status.RUNNING, "cursor": "replay", "version": 5, **state})
    locks = [
        keys.active_run_key(partner.name, runbook.name),
        *run_locks(runbook, partner, params, drill=False),
    ]
    assert store.create_locked(ex, locks) is None
    return ex


def test_a_guard_alarm_asks_the_running_guarded_step_to_pause_without_moving_the_run(store, catalog):
    ex = started(store, catalog, "rb-guardpause1")
    (pause,) = pause_for_alarm(event(), store, catalog, NOW + 1000)
    assert (pause.execution_id, pause.step_id, pause.requested) == (ex.execution_id, "replay", True)
    after = store.get(ex.execution_id)
    assert after.version == ex.version and after.status is Status.RUNNING, "no transition, no claim"
    assert after.pause_request == {
        "alarm": ALARM,
        "reason": "Threshold Crossed: p99 412 ms",
        "at_ms": NOW + 1000,
    }
    assert store.pause_request(ex.execution_id) == after.pause_request
    # The alarm again (a flap, a redelivery): the first request stands.
    (again,) = pause_for_alarm(event(), store, catalog, NOW + 2000)
    assert again.requested is False and store.get(ex.execution_id).pause_request["at_ms"] == NOW + 1000


def test_runs_not_running_a_step_that_alarm_guards_are_left_alone(store, catalog):
    started(store, catalog, "rb-guardpause2", cursor="preflight")  # not the guarded step
    assert pause_for_alarm(event(), store, catalog, NOW) == []
    assert store.get("rb-guardpause2").pause_request is None


@pytest.mark.parametrize("status", [Status.AWAITING_APPROVAL, Status.FAILED, Status.SUCCEEDED])
def test_a_waiting_or_ended_run_gets_no_request(store, catalog, status):
    started(store, catalog, "rb-guardpause3", status=status)
    pauses = pause_for_alarm(event(), store, catalog, NOW)
    assert all(not p.requested for p in pauses)
    assert store.get("rb-guardpause3").pause_request is None


@pytest.mark.parametrize(
    "alarm_event",
    [
        event("globex-latency"),  # not a guard of partner-acme
        event(ALARM, state="OK"),  # leaving ALARM pauses nothing
        event(ALARM, account="999999999999"),  # another account's alarm with a name like ours
    ],
)
def test_other_alarms_and_states_pause_nothing(store, catalog, alarm_event):
    started(store, catalog, "rb-guardpause4")
    assert pause_for_alarm(alarm_event, store, catalog, NOW) == []
    assert store.get("rb-guardpause4").pause_request is None


def test_a_partner_without_guard_alarms_is_never_paused(store):
    catalog = load_catalog()
    started(store, catalog, "rb-guardpause5")
    assert pause_for_alarm(event(), store, catalog, NOW) == []


def test_the_worker_obeys_the_request_at_its_next_safe_point_and_the_pause_clears_it(store, catalog):
    from bot.actions.guard import guard_tripped
    from bot.engine import machine
    from bot.engine.executor import Executor

    ex = started(store, catalog, "rb-guardpause6")
    executor = Executor(store, catalog, sessions=lambda partner, run: None)  # type: ignore[arg-type,return-value]
    step = catalog.runbooks["replay"].step("replay")
    ctx = executor._context(ex, step, lambda: 60_000, resumable=True, guardable=True)
    assert ctx.guard_alarms == ("acme-orders-*",)
    assert ctx.pause_requested() is None
    pause_for_alarm(event(), store, catalog, NOW)
    tripped = ctx.pause_requested()
    assert tripped.why == f"guard alarm {ALARM} entered ALARM: Threshold Crossed: p99 412 ms"
    assert tripped.alarms == (ALARM,)
    assert guard_tripped(ctx) == tripped, "the request wins before any CloudWatch call"
    # The worker's pause transition removes the request; it is obeyed once.
    current = store.get(ex.execution_id)
    result = machine.Checkpointed(NOW, {"cursor": "c"}, paused=tripped)
    t = machine.after_step(
        current, catalog.runbooks["replay"], step, result, NOW + 10, lambda e, s: True, None
    )
    store.commit(ex.execution_id, t)
    paused = store.get(ex.execution_id)
    assert paused.status is Status.AWAITING_APPROVAL and paused.pause_request is None
    # After a resume over that alarm, a request for it is no longer obeyed.
    resumed = dataclasses.replace(
        paused, approval=dataclasses.replace(paused.approval, decision="approved"), status=Status.APPROVED
    )
    again = executor._context(resumed, step, lambda: 60_000, resumable=True, guardable=True)
    assert again.guard_accepted == (ALARM,)
    assert store.request_pause(ex.execution_id, ALARM, "again", NOW + 20) is False, "it is not running"


@pytest.mark.parametrize(("rate", "pauses"), [(1.0, True), (0.0, False)])
def test_a_drills_guard_fault_injects_a_guard_alarm_until_the_approvers_resume_over_it(store, rate, pauses):
    from bot.actions.guard import guard_tripped
    from bot.engine.executor import INJECTED_GUARD, Executor

    catalog = load_catalog()  # partner-acme has no guard alarms of its own: the drill's fault guards
    ex = started(store, catalog, "rb-guarddrill1", drill=True, drill_faults={"guard": rate})
    executor = Executor(store, catalog, sessions=lambda partner, run: None)  # type: ignore[arg-type,return-value]
    step = catalog.runbooks["replay"].step("replay")
    ctx = executor._context(ex, step, lambda: 60_000, resumable=True, guardable=True)
    tripped = guard_tripped(ctx)
    if not pauses:
        assert tripped is None
        return
    assert tripped.alarms == (INJECTED_GUARD,)
    assert tripped.why == f"drill: injected guard alarm {INJECTED_GUARD} is in ALARM (faults guard=1)"
    # Resumed over: the injected alarm is accepted and pauses the step no more.
    from bot.engine import machine

    result = machine.Checkpointed(NOW, {"cursor": "c"}, paused=tripped)
    paused = machine.apply(
        ex, machine.after_step(ex, catalog.runbooks["replay"], step, result, NOW + 1, lambda e, s: True, None)
    )
    resumed = machine.apply(
        paused,
        machine.decide(
            paused, catalog.runbooks["replay"], "U0ACMELEAD", True, NOW + 2, lambda e, s: True, None
        ),
    )
    again = executor._context(resumed, step, lambda: 60_000, resumable=True, guardable=True)
    assert guard_tripped(again) is None
