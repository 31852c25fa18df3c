"""Runbooks, executions and a driver for the state machine's unit tests (test_machine and the
machines built on it: the planner, quorums, resumes, guards). Plain helpers, not fixtures: tests
build what they need with them."""

from __future__ import annotations

from bot.actions.base import Effect
from bot.engine import machine
from bot.engine.model import Runbook, Step
from bot.store.model import Execution, Status

T0 = 1_700_000_000_000


def runbook(*steps: Step, on_failure: tuple[Step, ...] = ()) -> Runbook:
    return Runbook("demo", "Demo runbook", "", (), steps, on_failure, "v1")


def step(sid: str, **kw) -> Step:
    return Step(id=sid, action=kw.pop("action", "notify"), **kw)


def execution(rb: Runbook, **kw) -> Execution:
    base = dict(
        execution_id="rb-test",
        runbook=rb.name,
        runbook_version="v1",
        partner="partner-acme",
        status=Status.PENDING,
        version=0,
        params={},
        requested_by="U0REQ",
        channel="C0OPS",
        created_at_ms=T0,
        updated_at_ms=T0,
        cursor=rb.steps[0].id,
        total_steps=len(rb.steps),
        sla_resolution_minutes=120,
    )
    base.update(kw)
    return Execution(**base)


def always(ex, s):
    return True


def effect(ex, s):
    return Effect(f"runs {s.action}", fingerprint=s.action)


def succeed(now=T0, **kw):
    return machine.Succeeded(now, kw.pop("summary", "ok"), **kw)


THREE = runbook(step("a"), step("b"), step("c"))


def run_to_end(rb: Runbook, ex: Execution, now: int = T0, results=None) -> Execution:
    """Drive the machine as the worker would, every step succeeding unless `results` says."""
    results = results or {}
    for _ in range(50):
        plan = machine.plan(ex, rb, now, always, effect)
        if isinstance(plan, machine.Idle):
            return ex
        if isinstance(plan, machine.Move):
            ex = machine.apply(ex, plan.transition)
            continue
        result = results.get(plan.step.id, succeed(now))
        ex = machine.apply(ex, machine.after_step(ex, rb, plan.step, result, now, always, effect))
    raise AssertionError("run did not settle")
