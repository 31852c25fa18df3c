"""`/runbook plan` and its Run this plan button, on the executions table (moto): the same rules as
a run, one run per plan, and a clear refusal for everything else."""

from __future__ import annotations

import dataclasses
import json

import boto3
import pytest

from bot.catalog import load_catalog
from bot.slack.commands import CommandService, Invocation
from bot.slack.plan_runs import PLAN_FRESH_SECONDS, run_id_for, start_from_plan
from bot.store import keys
from bot.store.executions import ExecutionStore
from bot.store.model import Status

ACME = "C0ACMEOPS"
NOW = 1_795_000_000_000


@pytest.fixture
def commands(executions_table):
    store = ExecutionStore(boto3.client("dynamodb"), executions_table)
    catalog = load_catalog()
    clock = {"now": NOW}
    service = CommandService(store, lambda: catalog, lambda: clock["now"])
    service.clock = clock  # type: ignore[attr-defined]
    return service


def planned(commands, text: str = "plan throttle partner-acme mode=provisioned write_units=300") -> str:
    answer = commands.answer(Invocation(text, "U0DEVONCALL", ACME, "T0LOCAL", f"t:{text}")).text
    assert answer.startswith("[PLAN] Planning"), answer
    plan_id = answer.split("plan `")[1].split("`")[0]
    plan = commands.store.get(plan_id)
    assert plan.kind == "plan" and plan.status is Status.PENDING
    assert plan.sla_resolution_minutes == 0, "no SLA clock runs on a plan"
    return plan_id


def finish(commands, plan_id: str, status: Status = Status.SUCCEEDED) -> None:
    """The plan as its worker leaves it (the pipeline tests drive real ones)."""
    from bot.store.codec import to_item

    plan = commands.store.get(plan_id)
    done = dataclasses.replace(plan, status=status, version=plan.version + 1, cursor=None, due_at_ms=None)
    commands.store.client.put_item(TableName=commands.store.table, Item=to_item(done))


def click(commands, plan_id: str, user: str = "U0ACMESRE", channel: str = ACME):
    return start_from_plan(commands, user, channel, json.dumps({"plan_id": plan_id}))


def test_a_plan_takes_no_lock_and_its_button_starts_the_run_once_with_its_parameters(commands):
    plan_id = planned(commands)
    assert not commands.store.lock_holder(keys.table_lock_key("partner-acme", "acme-orders"))
    finish(commands, plan_id)
    started = click(commands, plan_id)
    assert started.started and run_id_for(plan_id) in started.text
    run = commands.store.get(run_id_for(plan_id))
    plan = commands.store.get(plan_id)
    assert run.kind == "run" and run.plan_of == plan_id and run.params == plan.params
    assert run.params["write_units"] == 300 and run.requested_by == "U0ACMESRE" and run.trigger == "button"
    again = click(commands, plan_id, user="U0ACMELEAD")
    assert not again.started and "already started" in again.text and run_id_for(plan_id) in again.text


def test_the_button_refuses_a_plan_that_is_not_ready(commands):
    plan_id = planned(commands)
    refused = click(commands, plan_id)
    assert not refused.started and "not ready" in refused.text
    finish(commands, plan_id, Status.CANCELLED)
    assert "cancelled, not ready" in click(commands, plan_id).text
    assert commands.store.get(run_id_for(plan_id)) is None


def test_the_button_refuses_another_channel_an_old_plan_and_a_changed_runbook(commands):
    plan_id = planned(commands)
    finish(commands, plan_id)
    assert "run in <#C0ACMEOPS>" in click(commands, plan_id, channel="C0GLOBEXOPS").text
    commands.clock["now"] = NOW + (PLAN_FRESH_SECONDS + 1) * 1000
    assert "more than a day old" in click(commands, plan_id).text
    commands.clock["now"] = NOW
    catalog = load_catalog()
    changed = dataclasses.replace(catalog.runbooks["throttle"], version="f" * 40)
    commands.catalog = lambda: dataclasses.replace(
        catalog, runbooks={**catalog.runbooks, "throttle": changed}
    )
    assert "changed since this plan" in click(commands, plan_id).text
    assert commands.store.get(run_id_for(plan_id)) is None


def test_the_button_refuses_while_another_run_holds_the_table(commands):
    other = commands.answer(
        Invocation("throttle partner-acme", "U0DEVONCALL", ACME, "T0LOCAL", "t:other")
    ).text
    holder = other.split("execution `")[1].split("`")[0]
    plan_id = planned(commands)  # a plan is accepted next to it: no lock
    finish(commands, plan_id)
    refused = click(commands, plan_id)
    assert not refused.started and holder in refused.text and "force=true" in refused.text


@pytest.mark.parametrize(
    "value",
    ["", "{}", '{"plan_id": "rb-aaaaaaaaaa"}', '{"plan_id": "../../x"}', '{"execution_id": "rb-aaaaaaaaaa"}'],
)
def test_a_forged_or_unknown_button_starts_nothing(commands, value):
    refused = start_from_plan(commands, "U0ACMESRE", ACME, value)
    assert not refused.started and ("does not name a plan" in refused.text or "no plan" in refused.text)


def test_a_run_is_not_a_plan(commands):
    answer = commands.answer(
        Invocation("consistency partner-acme", "U0DEVONCALL", ACME, "T0LOCAL", "t:run")
    ).text
    run_id = answer.split("execution `")[1].split("`")[0]
    assert "there is no plan" in click(commands, run_id).text
