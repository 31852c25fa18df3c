"""The start form: the view built for each runbook and partner (typed inputs, limits, defaults,
hints), what a submission reads, its validation (errors under the fields) and the run it starts;
the stand-in's views.update (hash guard, kept input)."""

from __future__ import annotations

import json

import boto3
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.catalog import load_catalog
from bot.engine.model import ParamType
from bot.engine.params import partner_choices
from bot.local.slack_api import SlackStandIn, _invalid_view
from bot.local.slack_requests import DEV_BOT_TOKEN
from bot.slack.commands import CommandService, start_from_form
from bot.slack.start_form import (
    PARTNER_BLOCK,
    PLAN_BLOCK,
    PLAN_OPTION,
    RUNBOOK_BLOCK,
    START_CALLBACK,
    FormChoice,
    param_prefix,
    read_choice,
    read_form,
    start_view,
)
from bot.store.executions import ExecutionStore
from bot.store.keys import table_lock_key

ACME, GLOBEX, NOWHERE = "C0ACMEOPS", "C0GLOBEXOPS", "C0RANDOM01"
CATALOG = load_catalog()
NOW = 1_795_000_000_000


def blocks_by_id(view):
    return {b["block_id"]: b for b in view["blocks"] if b.get("block_id")}


@pytest.mark.parametrize("runbook", sorted(CATALOG.runbooks))
@pytest.mark.parametrize(("partner", "channel"), [("partner-acme", ACME), ("partner-globex", GLOBEX)])
def test_every_parameter_is_a_typed_input_with_its_limits_default_and_hint(runbook, partner, channel):
    rb, pt = CATALOG.runbooks[runbook], CATALOG.partners[partner]
    view = start_view(CATALOG, FormChoice(channel, runbook, partner))
    assert _invalid_view(view) == []  # Slack would open it
    assert view["callback_id"] == START_CALLBACK and json.loads(view["private_metadata"]) == {
        "channel": channel
    }
    blocks = blocks_by_id(view)
    for p in rb.parameters:
        block = blocks[param_prefix(runbook, partner) + p.name]
        element = block["element"]
        default = pt.overrides.get(runbook, {}).get(p.name, p.default)
        assert block["label"]["text"] == p.name
        assert block.get("hint", {}).get("text", "") == p.description
        assert block["optional"] is (default is not None or not p.required)
        if p.type in (ParamType.INT, ParamType.NUMBER):
            assert element["type"] == "number_input"
            assert element["is_decimal_allowed"] is (p.type is ParamType.NUMBER)
            assert float(element["min_value"]) == p.minimum
            ceiling = getattr(pt.capacity, p.partner_limit, None) if p.partner_limit else None
            assert float(element["max_value"]) == min(x for x in (p.maximum, ceiling) if x)
            assert float(element["initial_value"]) == min(default, float(element["max_value"]))
        elif p.refers_to:  # a table alias, an index, a key attribute: the partner file's own
            assert element["type"] == "static_select"
            assert [o["value"] for o in element["options"]] == partner_choices(p, pt)[0]
            if p.refers_to == "table":
                assert [o["value"] for o in element["options"]] == list(pt.tables)
            if default is not None:
                assert element["initial_option"]["value"] == default
        elif p.type is ParamType.ENUM:
            assert [o["value"] for o in element["options"]] == list(p.values)
            assert element["initial_option"]["value"] == default
        else:
            assert element["type"] == "plain_text_input"
            assert element["initial_value"] == str(default)
    approvals = view["blocks"][-1]["elements"][0]["text"]
    for step in rb.approval_steps:
        assert f"`{step.id}`" in approvals
    if not rb.approval_steps:
        assert "No step of this runbook needs approval" in approvals


def test_the_form_offers_only_the_partners_allowed_in_its_channel():
    acme = blocks_by_id(start_view(CATALOG, FormChoice(ACME, "throttle")))
    assert [o["value"] for o in acme[PARTNER_BLOCK]["element"]["options"]] == ["partner-acme"]
    assert acme[RUNBOOK_BLOCK]["dispatch_action"] and acme[PARTNER_BLOCK]["dispatch_action"]
    nowhere = start_view(CATALOG, FormChoice(NOWHERE, "throttle"))
    assert PARTNER_BLOCK not in blocks_by_id(nowhere)
    assert "No partner's runbooks may run in <#C0RANDOM01>" in json.dumps(nowhere)
    # Before a runbook is picked: only the runbook select (and a submit, which Slack requires).
    first = start_view(CATALOG, FormChoice(ACME))
    assert list(blocks_by_id(first)) == [RUNBOOK_BLOCK] and _invalid_view(first) == []


def state(runbook="throttle", partner="partner-acme", **params):
    values = {
        RUNBOOK_BLOCK: {RUNBOOK_BLOCK: {"type": "static_select", "selected_option": {"value": runbook}}},
        PARTNER_BLOCK: {PARTNER_BLOCK: {"type": "static_select", "selected_option": {"value": partner}}},
    }
    for name, value in params.items():
        block_id = param_prefix(runbook, partner) + name
        values[block_id] = {block_id: {"type": "plain_text_input", "value": value}}
    return values


def form(channel=ACME, **kwargs):
    return {"private_metadata": json.dumps({"channel": channel}), "state": {"values": state(**kwargs)}}


def test_a_submission_reads_only_the_fields_of_the_picked_runbook_and_partner():
    view = form(window="30m", write_units=None)
    other = param_prefix("replay", "partner-acme") + "budget_share"
    view["state"]["values"][other] = {other: {"type": "number_input", "value": "0.9"}}
    filled = read_form(view)
    assert filled.choice == FormChoice(ACME, "throttle", "partner-acme") == read_choice(view)
    assert filled.given == {"window": "30m"}  # empty fields fall back to the defaults
    assert read_choice({"private_metadata": "not json"}).channel == ""


@pytest.fixture
def commands(executions_table):
    store = ExecutionStore(boto3.client("dynamodb"), executions_table)
    return CommandService(store, load_catalog, lambda: NOW, lambda g: frozenset())


def test_a_bad_submission_comes_back_under_each_field_and_starts_nothing(commands):
    prefix = param_prefix("throttle", "partner-acme")
    answer = start_from_form(
        commands,
        form(write_units="5000", window="3 fortnights", mode="sideways"),
        "U0DEVONCALL",
        "T0",
        "1.1.a",
    )
    assert answer.started is None
    assert set(answer.errors) == {prefix + "write_units", prefix + "window", prefix + "mode"}
    assert "above partner-acme's limit" in answer.errors[prefix + "write_units"]
    assert "not one of on-demand, provisioned" in answer.errors[prefix + "mode"]
    assert all("`" not in e for e in answer.errors.values())  # plain text under a field
    assert (
        commands.store.lock_holder(table_lock_key("partner-acme", "acme-orders")) is None
    )  # nothing written
    assert start_from_form(commands, form(runbook="nope"), "U0X", "T0", "1.1.b").errors == {
        RUNBOOK_BLOCK: "Pick a runbook from the list."
    }
    hidden = {"private_metadata": json.dumps({"channel": ACME}), "state": {"values": state(partner="")}}
    del hidden["state"]["values"][PARTNER_BLOCK]
    assert start_from_form(commands, hidden, "U0X", "T0", "1.1.c").errors == {
        RUNBOOK_BLOCK: "Pick a partner from the list."
    }


def test_a_partner_not_allowed_in_the_forms_channel_is_refused(commands):
    answer = start_from_form(commands, form(channel=GLOBEX), "U0DEVONCALL", "T0", "1.2.a")
    assert answer.started is None and "run in #C0ACMEOPS" in answer.errors[PARTNER_BLOCK]
    answer = start_from_form(commands, {"state": {"values": state()}}, "U0DEVONCALL", "T0", "1.2.b")
    assert "which channel" in answer.errors[RUNBOOK_BLOCK]


def test_a_good_submission_starts_the_run_in_the_forms_channel_once(commands):
    answer = start_from_form(
        commands, form(write_units="300", mode="provisioned"), "U0DEVONCALL", "T0", "1.3.a"
    )
    assert not answer.errors and answer.started is not None and answer.channel == ACME
    execution_id = answer.started.text.split("execution `")[1].split("`")[0]
    ex = commands.store.get(execution_id)
    assert (ex.channel, ex.requested_by, ex.trigger) == (ACME, "U0DEVONCALL", "slash")
    assert ex.params == {"table": "orders", "window": 900, "mode": "provisioned", "write_units": 300}
    # Slack redelivers the same submission (same trigger_id): the same run, not a second one.
    again = start_from_form(
        commands, form(write_units="300", mode="provisioned"), "U0DEVONCALL", "T0", "1.3.a"
    )
    assert again.started is not None and execution_id in again.started.text
    # Another submission for the same table meets the lock, said under the partner.
    third = start_from_form(commands, form(), "U0DEVONCALL", "T0", "1.3.b")
    assert "is already running on a table this run would change" in third.errors[PARTNER_BLOCK]
    assert "type /runbook throttle partner-acme force=true" in third.errors[PARTNER_BLOCK]


@pytest.fixture
def slack():
    stand_in = SlackStandIn(token=DEV_BOT_TOKEN)
    stand_in.start()
    client = WebClient(token=DEV_BOT_TOKEN, base_url=stand_in.base_url)
    client.retry_handlers = []
    yield stand_in, client
    stand_in.stop()


def test_views_update_keeps_entered_values_guards_the_hash_and_needs_the_view(slack):
    stand_in, client = slack
    opened = client.views_open(
        trigger_id=stand_in.trigger("U0A"), view=start_view(CATALOG, FormChoice(ACME))
    )["view"]
    payload = stand_in.choose(opened["id"], RUNBOOK_BLOCK, "throttle")
    assert payload["actions"][0]["selected_option"]["value"] == "throttle"
    assert (
        payload["view"]["state"]["values"][RUNBOOK_BLOCK][RUNBOOK_BLOCK]["selected_option"]["value"]
        == "throttle"
    )
    updated = client.views_update(
        view_id=opened["id"], hash=opened["hash"], view=start_view(CATALOG, FormChoice(ACME, "throttle"))
    )["view"]
    assert updated["hash"] != opened["hash"]
    # The runbook select kept its block and action ids: Slack keeps the pick.
    assert updated["state"]["values"][RUNBOOK_BLOCK][RUNBOOK_BLOCK]["selected_option"]["value"] == "throttle"
    with pytest.raises(SlackApiError) as stale:
        client.views_update(
            view_id=opened["id"], hash=opened["hash"], view=start_view(CATALOG, FormChoice(ACME))
        )
    assert stale.value.response["error"] == "hash_conflict"
    for bad, error in (
        ({"view_id": "V0NOPE"}, "not_found"),
        ({}, "invalid_arguments"),
        ({"view_id": opened["id"], "external_id": "x"}, "invalid_arguments"),
    ):
        with pytest.raises(SlackApiError) as refused:
            client.api_call("views.update", json={"view": start_view(CATALOG, FormChoice(ACME)), **bad})
        assert refused.value.response["error"] == error
    with pytest.raises(ValueError, match="not an option"):
        stand_in.choose(opened["id"], RUNBOOK_BLOCK, "no-such-runbook")


def checked_plan(view: dict) -> dict:
    view["state"]["values"][PLAN_BLOCK] = {
        PLAN_BLOCK: {"type": "checkboxes", "selected_options": [{"value": PLAN_OPTION}]}
    }
    return view


def test_the_form_offers_plan_first_once_runbook_and_partner_are_picked():
    assert PLAN_BLOCK not in blocks_by_id(start_view(CATALOG, FormChoice(ACME, "throttle")))
    plan = blocks_by_id(start_view(CATALOG, FormChoice(ACME, "throttle", "partner-acme")))[PLAN_BLOCK]
    assert plan["optional"] is True and plan["element"]["type"] == "checkboxes"
    assert [o["value"] for o in plan["element"]["options"]] == [PLAN_OPTION]
    assert read_form(form()).plan is False
    assert read_form(checked_plan(form())).plan is True


def test_plan_first_starts_a_plan_that_changes_nothing_and_takes_no_lock(commands):
    answer = start_from_form(commands, checked_plan(form(write_units="300")), "U0DEVONCALL", "T0", "1.4.a")
    assert not answer.errors and answer.started is not None and "Planning `throttle`" in answer.started.text
    plan_id = answer.started.text.split("plan `")[1].split("`")[0]
    plan = commands.store.get(plan_id)
    assert (plan.kind, plan.channel, plan.params["write_units"]) == ("plan", ACME, 300)
    assert commands.store.lock_holder(table_lock_key("partner-acme", "acme-orders")) is None


def test_from_the_app_home_the_form_offers_partners_with_a_channel_and_runs_there(commands):
    view = start_view(CATALOG, FormChoice("", "throttle", from_home=True))
    offered = [o["value"] for o in blocks_by_id(view)[PARTNER_BLOCK]["element"]["options"]]
    assert offered == sorted(p.name for p in CATALOG.partners.values() if p.channels)
    assert read_choice(view).from_home is True
    home_form = {"private_metadata": view["private_metadata"], "state": {"values": state(write_units="300")}}
    answer = start_from_form(commands, home_form, "U0ACMELEAD", "T0", "1.5.a")
    assert not answer.errors and answer.channel == ACME, "partner-acme's own channel"
    # Not an approver: the Home cannot tell whether they are in the partner's channel.
    refused = start_from_form(commands, home_form, "U0DEVONCALL", "T0", "1.5.c").errors[PARTNER_BLOCK]
    assert "only Acme Logistics's approvers start runs" in refused and "#C0ACMEOPS" in refused
    forged = {"private_metadata": json.dumps({"channel": "", "home": "yes"}), "state": {"values": state()}}
    assert (
        "which channel"
        in start_from_form(commands, forged, "U0DEVONCALL", "T0", "1.5.b").errors[RUNBOOK_BLOCK]
    )
