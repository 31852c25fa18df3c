"""What a hostile or tired user can do with `/runbook`, on the shipped runbooks and partners.

Partner limits are ceilings, parameters that name partner things must exist, two runs never
change one table at once, drills never reach production, user text never pings anyone, and a
run is only shown in its partner's channels.
"""

from __future__ import annotations

import re

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.engine.params import bind_parameters
from bot.exceptions import ActionError, CommandError
from bot.partners.sessions import DrillGuard
from bot.slack.commands import CommandService, Invocation
from bot.store.executions import ExecutionStore

ACME, GLOBEX = "C0ACMEOPS", "C0GLOBEXOPS"
NOW = 1_795_000_000_000


@pytest.fixture
def service(executions_table):
    store = ExecutionStore(boto3.client("dynamodb"), executions_table)
    groups = {"S0ACMEONCALL": frozenset({"U0ONCALL"})}
    catalog = load_catalog()  # one per service, as a function's services hold it
    return CommandService(store, lambda: catalog, lambda: NOW, lambda g: groups.get(g, frozenset())), store


def ask(service_and_store, text, *, user="U0DEVONCALL", channel=ACME, trigger=None):
    service, _ = service_and_store
    return service.answer(Invocation(text, user, channel, "T0LOCAL", trigger or f"t:{text}:{user}")).text


def started_id(answer: str) -> str:
    assert "execution `" in answer, answer
    return answer.split("execution `")[1].split("`", maxsplit=1)[0]


# -- partner limits are ceilings -----------------------------------------------------------------


def test_a_runbook_default_above_the_partners_replay_share_is_lowered_to_it():
    catalog = load_catalog()
    params = bind_parameters(catalog.runbooks["replay"], catalog.partners["partner-globex"], {})
    assert params["budget_share"] == 0.3  # the runbook says 0.5; Globex allows 0.3


@pytest.mark.parametrize(
    ("runbook", "partner", "given", "says"),
    [
        ("replay", "partner-globex", {"budget_share": "1"}, "capacity.replay_budget_share is 0.3"),
        ("throttle", "partner-globex", {"write_units": "900"}, "capacity.max_write_units is 500"),
        ("throttle", "partner-globex", {"mode": "on-demand"}, "does not allow on-demand"),
    ],
)
def test_asking_above_a_partner_limit_is_refused_saying_the_limit(runbook, partner, given, says):
    catalog = load_catalog()
    with pytest.raises(CommandError, match=re.escape(says)):
        bind_parameters(catalog.runbooks[runbook], catalog.partners[partner], given)


def test_the_replay_never_paces_above_the_partners_share_whatever_its_input():
    from bot.actions.replay import Replay

    class Ctx:
        partner = load_catalog().partners["partner-globex"]

        class aws:
            @staticmethod
            def client(service):
                class Ddb:
                    def describe_table(self, TableName):
                        return {"Table": {"ProvisionedThroughput": {"WriteCapacityUnits": 100}}}

                return Ddb()

    assert Replay().budget(Ctx(), {"table": "globex-payments", "budget_share": 1.0}) == 30.0


# -- bad parameters never start a run -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("throttle partner-acme table=../x", "is not a table alias of partner-acme (orders)"),
        ("timeout partner-acme key_attribute=nope", "is not a key attribute of partner-acme"),
        ("timeout partner-acme latency_ms=nan", "is not a finite number"),
        ("timeout partner-acme latency_ms=inf", "is not a finite number"),
        ("timeout partner-acme key_value=<!channel>", "contains `&lt;`"),
    ],
)
def test_bad_parameters_are_refused_with_what_is_valid_and_nothing_starts(service, text, says):
    answer = ask(service, text)
    assert says in answer and "execution `" not in answer
    _, store = service
    assert not store.client.scan(TableName=store.table)["Items"], "nothing was written"


# -- two runs never change one table at once ---------------------------------------------------


def test_a_second_run_that_would_change_the_same_table_is_refused_with_the_active_runs_id(service):
    first = started_id(ask(service, "throttle partner-acme"))
    again = ask(service, "throttle partner-acme", user="U0OTHER")
    assert f"`{first}` is already running" in again and f"/runbook cancel {first}" in again
    replay = ask(service, "replay partner-acme", user="U0OTHER")  # replay writes acme-orders too
    assert f"`{first}` is already running" in replay


def test_read_only_runs_and_drills_take_no_production_lock(service):
    started_id(ask(service, "throttle partner-acme"))
    started_id(ask(service, "consistency partner-acme"))  # reads only
    started_id(ask(service, "drill throttle partner-acme"))  # locks acme-orders-drill, not acme-orders


def test_only_an_approver_may_force_past_a_lock_and_the_run_says_so(service):
    first = started_id(ask(service, "throttle partner-acme"))
    refused = ask(service, "throttle partner-acme force=true", user="U0OTHER")
    assert "only Acme Logistics's approvers may use force=true" in refused
    forced = started_id(ask(service, "throttle partner-acme force=true", user="U0ONCALL"))  # via the group
    _, store = service
    assert store.get(forced).forced_over == first


# -- drills never touch production -------------------------------------------------------------


def test_a_partner_without_a_drill_target_for_its_store_cannot_be_drilled(service, monkeypatch):
    import dataclasses

    catalog = service[0].catalog()
    acme = catalog.partners["partner-acme"]
    partial = dataclasses.replace(acme, drill_target={"orders": "acme-orders-drill"})
    monkeypatch.setitem(catalog.partners, "partner-acme", partial)
    answer = ask(service, "drill replay partner-acme")
    assert "no drill target for the failed-request store `failed_requests` (acme-failed-writes)" in answer
    assert "execution `" not in answer


def test_the_drill_view_names_only_drill_resources():
    for partner in load_catalog().partners.values():
        view = partner.for_drill()
        production = partner.production_resources()
        assert not production & view.production_resources(), partner.name


@pytest.mark.parametrize(
    "params",
    [
        {"TableName": "acme-orders"},
        {"QueueUrl": "http://127.0.0.1:1/123456789012/acme-failed-writes"},
        {"RequestItems": {"acme-orders": []}},
        {
            "MetricDataQueries": [
                {"MetricStat": {"Metric": {"Dimensions": [{"Name": "TableName", "Value": "acme-orders"}]}}}
            ]
        },
    ],
)
def test_the_drill_guard_refuses_any_request_naming_production(params):
    guard = DrillGuard(load_catalog().partners["partner-acme"].production_resources())
    with pytest.raises(ActionError, match="refused before it was sent") as error:
        guard.check(params)
    assert error.value.code == "DrillTouchesProduction"
    guard.check({"TableName": "acme-orders-drill"})  # its own resources pass


# -- user text never pings anyone --------------------------------------------------------------

OURS = re.compile(r"<(?:#C0[A-Z0-9]+|@U0[A-Z0-9]+|!subteam\^S0[A-Z0-9]+|!date\^[^>]+)>")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="<>&!@|^#:abcUS0 =`'\"x", min_size=1, max_size=40))
def test_hostile_text_in_a_command_never_becomes_a_mention_or_a_link(service, hostile):
    for text in (hostile, f"throttle partner-acme table={hostile}", f"status {hostile}", f"help {hostile}"):
        answer = ask(service, text)
        leftover = OURS.sub("", answer)
        assert "<" not in leftover and ">" not in leftover, (text, answer)
        for token in OURS.findall(answer):  # only the partners' own channels and approvers
            assert token[2:-1] in {"C0ACMEOPS", "C0GLOBEXOPS", "U0ACMELEAD", "U0ACMESRE"} or token.startswith(
                ("<!subteam^S0ACMEONCALL", "<!date^")
            ), token


# -- need to know ------------------------------------------------------------------------------


def test_a_run_is_shown_only_in_its_partners_channels_or_to_its_people_in_a_dm(service):
    run = started_id(ask(service, "throttle partner-acme", user="U0REQ"))
    elsewhere = ask(service, f"status {run}", channel=GLOBEX)
    assert "belongs to Acme Logistics; ask in <#C0ACMEOPS>" in elsewhere and "RUNNING" not in elsewhere
    assert "belongs to" in ask(service, f"timeline {run}", channel="C0RANDOM")
    assert "belongs to" in ask(service, f"cancel {run}", channel=GLOBEX, user="U0ACMELEAD")
    assert "belongs to" in ask(service, f"status {run}", channel="D0STRANGER", user="U0STRANGER")
    assert run in ask(service, f"status {run}", channel="D0REQ", user="U0REQ")
    assert run in ask(service, f"status {run}", channel="D0LEAD", user="U0ACMELEAD")


def test_members_of_an_approver_group_may_cancel(service):
    run = started_id(ask(service, "throttle partner-acme", user="U0REQ"))
    assert "Cancelling" in ask(service, f"cancel {run}", user="U0ONCALL")
    refused = ask(
        service, f"cancel {started_id(ask(service, 'consistency partner-acme', user='U0REQ'))}", user="U0X"
    )
    assert "only the requester" in refused


def test_a_misspelt_runbook_or_partner_gets_did_you_mean(service):
    assert "no runbook named `throtle`; did you mean `throttle`?" in ask(service, "throtle partner-acme")
    assert "did you mean `partner-acme`?" in ask(service, "throttle partner-acm")
