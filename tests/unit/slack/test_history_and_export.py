"""`/runbook history` and `/runbook export`: grammar, who may see which runs, and how a page reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot.catalog import load_catalog
from bot.engine.machine import RETENTION_SECONDS
from bot.exceptions import CommandError
from bot.slack import grammar, render
from bot.slack.history import MORE_ACTION, PAGE_SIZE, Asker, HistoryService, history_message
from bot.store.history import HistoryFilter, HistoryPage, RunSummary
from bot.store.model import ACTIVE, TERMINAL, Status

from .test_render import assert_slack_accepts

NOW = 1_795_000_000_000
DAY = 86_400_000

# -- grammar -----------------------------------------------------------------------------------


def test_history_takes_a_partner_a_runbook_a_status_and_since_in_any_order():
    assert grammar.parse("history") == grammar.History()
    parsed = grammar.parse("history failed throttle since=30d partner-acme")
    assert parsed == grammar.History(("throttle", "partner-acme"), frozenset({Status.FAILED}), 30 * 86400)
    assert grammar.parse("history status=active").statuses == ACTIVE
    assert grammar.parse("history ended").statuses == TERMINAL
    assert grammar.parse("history timed-out").statuses == {Status.TIMED_OUT}
    assert grammar.parse("HISTORY Awaiting_Approval").statuses == {Status.AWAITING_APPROVAL}
    named = grammar.parse("history runbook=throttle partner=partner-acme")
    assert (named.partner, named.runbook, named.names) == ("partner-acme", "throttle", ())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("history a b c", "at most a partner, a runbook"),
        ("history since=91d", "from 1m to 90d"),
        ("history since=30s", "from 1m to 90d"),
        ("history since=soon", "not a duration"),
        ("history failed succeeded", "at most one status"),
        ("history status=finished", "is not a run status"),
        ("history limit=5", "takes `since=`"),
        ("history partner=a partner=b", "given twice"),
        ("history Partner_Acme", "not a partner or runbook name"),
        ("history <@U0X>", "not a partner or runbook name"),
        ("export", "one execution id"),
        ("export rb-abcdefghij rb-bcdefghijk", "one execution id"),
        ("export ../../etc", "not an execution id"),
    ],
)
def test_bad_history_and_export_commands_say_what_is_valid(text, says):
    with pytest.raises(CommandError) as refused:
        grammar.parse(text)
    assert says in str(refused.value)
    assert "<@" not in str(refused.value), "a typed mention never becomes one"


def test_history_goes_back_exactly_as_far_as_runs_are_kept():
    assert grammar.HISTORY_MAX_SECONDS == RETENTION_SECONDS
    assert grammar.parse("export RB-ABCDEFGHIJ") == grammar.Export("rb-abcdefghij")


# -- who may see which runs --------------------------------------------------------------------


class FakeHistory:
    """The store's answers, and the filters it was asked with."""

    def __init__(self, page: HistoryPage | None = None) -> None:
        self.page = page or HistoryPage(())
        self.asked: list[tuple[HistoryFilter, str]] = []

    def partner_runs(self, wanted: HistoryFilter, limit: int = 10, cursor: str = "") -> HistoryPage:
        assert limit == PAGE_SIZE
        self.asked.append((wanted, cursor))
        return self.page


def service(store: FakeHistory, approvers: frozenset[str] = frozenset({"U0ACMELEAD"})) -> HistoryService:
    return HistoryService(
        store,  # type: ignore[arg-type]
        load_catalog,
        lambda: NOW,
        lambda user, partner: user in approvers,
    )


def test_in_the_partners_channel_everyone_sees_its_runs():
    store = FakeHistory()
    service(store).answer(grammar.parse("history throttle failed since=2d"), Asker("U0ANYONE", "C0ACMEOPS"))
    ((wanted, cursor),) = store.asked
    assert wanted == HistoryFilter("partner-acme", NOW - 2 * DAY, "throttle", frozenset({Status.FAILED}))
    assert cursor == ""


def test_another_partners_channel_and_a_channel_of_nobody_are_refused():
    store = FakeHistory()
    with pytest.raises(CommandError, match="shown in <#C0ACMEOPS>"):
        service(store).answer(grammar.parse("history partner-acme"), Asker("U0ANYONE", "C0GLOBEXOPS"))
    with pytest.raises(CommandError, match="no partner has this channel; name one"):
        service(store).answer(grammar.parse("history"), Asker("U0ANYONE", "C0GENERAL"))
    assert store.asked == [], "nothing was read"


def test_in_a_dm_approvers_see_every_run_and_others_only_their_own():
    store = FakeHistory()
    service(store).answer(grammar.parse("history partner-acme"), Asker("U0ACMELEAD", "D0ACMELEAD"))
    service(store).answer(grammar.parse("history partner-acme"), Asker("U0REQUESTER", "D0REQUESTER"))
    assert [w.requested_by for w, _ in store.asked] == [None, "U0REQUESTER"]


def test_unknown_names_get_did_you_mean():
    with pytest.raises(CommandError, match="did you mean `throttle`"):
        service(FakeHistory()).answer(grammar.parse("history throtle"), Asker("U0X", "C0ACMEOPS"))
    with pytest.raises(CommandError, match="no partner named `partner-acm`; did you mean `partner-acme`"):
        service(FakeHistory()).answer(grammar.parse("history partner=partner-acm"), Asker("U0X", "C0ACMEOPS"))


def test_more_re_checks_the_clickers_rights_and_the_value():
    store = FakeHistory()
    value = json.dumps(
        {"p": "partner-acme", "r": None, "s": ["FAILED"], "t": NOW - DAY, "c": "1.rb-abcdefghij"}
    )
    service(store).more(value, Asker("U0ANYONE", "C0ACMEOPS"))
    assert store.asked[-1] == (
        HistoryFilter("partner-acme", NOW - DAY, None, frozenset({Status.FAILED})),
        "1.rb-abcdefghij",
    )
    with pytest.raises(CommandError, match="shown in"):  # the button, forwarded to another channel
        service(store).more(value, Asker("U0ANYONE", "C0GLOBEXOPS"))
    service(store).more(value, Asker("U0STRANGER", "D0STRANGER"))  # a DM: their own runs only
    assert store.asked[-1][0].requested_by == "U0STRANGER"
    for forged in [
        "",
        "{",
        '{"p": "partner-nope", "t": 1, "c": ""}',
        '{"p": "partner-acme", "s": ["DONE"], "t": 1, "c": ""}',
    ]:
        with pytest.raises(CommandError, match="More"):
            service(store).more(forged, Asker("U0ANYONE", "C0ACMEOPS"))


# -- how a page reads --------------------------------------------------------------------------


def summary(n: int, **changes: Any) -> RunSummary:
    base: dict[str, Any] = dict(
        execution_id=f"rb-abcdefgh{'ijklmnopqrstuvwxyz'[n % 18]}{'abcdefghij'[n % 10]}",
        runbook="throttle",
        partner="partner-acme",
        status=Status.SUCCEEDED,
        requested_by="U0ONCALL",
        created_at_ms=NOW - n * 60_000,
        updated_at_ms=NOW - n * 60_000 + 185_000,
        approved_by=("U0ACMELEAD", "U0ACMESRE"),
    )
    base.update(changes)
    return RunSummary(**base)


def test_a_page_shows_id_runbook_requester_outcome_duration_approvers_and_marks_drills():
    page = HistoryPage(
        (
            summary(1),
            summary(2, status=Status.FAILED, error_code="ThrottlingException", drill=True, approved_by=()),
        )
    )
    message = history_message("Acme Logistics", HistoryFilter("partner-acme", NOW - DAY), page)
    assert_slack_accepts(message)
    for block in message.blocks:
        Block.parse(block).validate_json()
    first, second = message.blocks[1]["text"]["text"], message.blocks[2]["text"]["text"]
    assert "`rb-" in first and "*throttle*" in first and "<@U0ONCALL>" in first
    assert "took 3m 05s" in first and "approved by <@U0ACMELEAD>, <@U0ACMESRE>" in first
    assert (
        second.startswith("`[DRILL]`")
        and "FAILED `ThrottlingException`" in second
        and "approved by none" in second
    )
    assert not any(b["type"] == "actions" for b in message.blocks), "no cursor, no More"


def test_more_carries_the_filter_and_the_cursor_not_who_may_see():
    wanted = HistoryFilter("partner-acme", NOW - DAY, "throttle", ACTIVE, requested_by="U0ME")
    message = history_message("Acme", wanted, HistoryPage((summary(1),), "123.rb-abcdefghij"))
    (button,) = message.blocks[-1]["elements"]
    assert button["action_id"] == MORE_ACTION
    value = json.loads(button["value"])
    assert value == {
        "p": "partner-acme",
        "r": "throttle",
        "s": sorted(s.value for s in ACTIVE),
        "t": NOW - DAY,
        "c": "123.rb-abcdefghij",
    }
    assert_slack_accepts(message)


def test_a_full_page_stays_within_slacks_limits_and_partner_text_never_becomes_markup():
    page = HistoryPage(tuple(summary(n) for n in range(PAGE_SIZE)), "9.rb-abcdefghij")
    message = history_message(
        "<!channel> & <https://evil|Acme>", HistoryFilter("partner-acme", NOW - DAY), page
    )
    assert_slack_accepts(message)
    assert "<!channel>" not in message.text and "<!channel>" not in json.dumps(message.blocks)
    empty = history_message(
        "Acme", HistoryFilter("partner-acme", NOW - DAY), HistoryPage((), "9.rb-abcdefghij")
    )
    assert "none" in empty.text and "More" in empty.text and empty.blocks[-1]["type"] == "actions"


def test_an_ended_runs_last_message_offers_the_evidence_file():
    message = render.with_export_button(render.Message("done", [render.section("done")]), "rb-abcdefghij")
    (button,) = message.blocks[-1]["elements"]
    assert (button["action_id"], button["value"]) == (render.EXPORT_ACTION, "rb-abcdefghij")
    assert_slack_accepts(message)


def test_a_partner_without_channels_shows_each_channel_the_runs_started_there():
    import dataclasses

    catalog = load_catalog()
    anywhere = dataclasses.replace(catalog.partners["partner-acme"], channels=())
    partners = {**catalog.partners, "partner-acme": anywhere}
    store = FakeHistory()
    open_service = HistoryService(
        store,  # type: ignore[arg-type]
        lambda: dataclasses.replace(catalog, partners=partners),
        lambda: NOW,
        lambda user, partner: False,
    )
    open_service.answer(grammar.parse("history partner-acme"), Asker("U0ANYONE", "C0WARROOM"))
    assert store.asked[-1][0].channel == "C0WARROOM"
