"""App Home: the view (Slack's limits, the channel's own approval buttons), who sees a waiting
approval (the channel's rules: approvers, never the requester, each once), which changes
refresh whose homes, and views.publish as the strict stand-in answers it."""

from __future__ import annotations

import dataclasses
import json

import boto3
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.local.slack_api import SlackStandIn
from bot.local.slack_requests import DEV_BOT_TOKEN
from bot.slack.home import (
    FANOUT_CAP,
    MAX_VIEW_BLOCKS,
    START_ACTION,
    GroupCache,
    HomeData,
    HomeService,
    Waiting,
    home_changed,
    home_view,
)
from bot.store.executions import ExecutionStore
from bot.store.history import HistoryStore
from bot.store.model import Status, Vote
from tests.unit.engine.test_machine import T0
from tests.unit.slack.test_decisions import Catalog, waiting


@pytest.fixture
def store(executions_table: str) -> ExecutionStore:
    return ExecutionStore(boto3.client("dynamodb"), executions_table)


def service(store: ExecutionStore, members=lambda group: frozenset({"U0ONCALL"})) -> HomeService:
    return HomeService(store, HistoryStore(store.client, store.table), Catalog, members)


def buttons(view: dict) -> list[dict]:
    return [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_an_approver_sees_the_waiting_approval_with_the_channels_buttons(store):
    ex = waiting(store)
    data = service(store).gather("U0A", T0 + 1000)
    assert [w.ex.execution_id for w in data.waiting] == [ex.execution_id]
    assert data.partners == ("Acme",)
    view = home_view(data, T0 + 1000)
    assert view["type"] == "home"
    ids = [e["action_id"] for e in buttons(view)]
    assert ids == [START_ACTION, "approve", "approve_comment", "reject"]
    value = json.loads(buttons(view)[1]["value"])
    assert value == {"execution_id": ex.execution_id, "step_id": "replay", "version": ex.version}
    block_ids = [b["block_id"] for b in view["blocks"] if "block_id" in b]
    assert len(block_ids) == len(set(block_ids)), "Slack refuses a view with a block_id twice"


def test_the_requester_sees_their_run_but_no_buttons_and_an_outsider_sees_nothing(store):
    ex = waiting(store)
    mine = service(store).gather("U0REQ", T0 + 1000)
    assert mine.waiting == () and mine.partners == ()
    assert [r.execution_id for r in mine.recent] == [ex.execution_id]
    assert [a.execution_id for a in mine.active] == [ex.execution_id], "a partner of their runs"
    assert [e["action_id"] for e in buttons(home_view(mine, T0 + 1000))] == [START_ACTION]
    outsider = service(store).gather("U0STRANGER", T0 + 1000)
    assert (outsider.waiting, outsider.active, outsider.recent) == ((), (), ())


def test_a_group_member_sees_it_and_an_approver_who_voted_does_not(store):
    ex = waiting(store)
    assert service(store).gather("U0ONCALL", T0 + 1000).waiting, "S0ONCALL's member"
    vote = dataclasses.replace(ex.approval, votes=(Vote("U0A", T0 + 10),))
    voted = dataclasses.replace(ex, approval=vote)
    assert service(store)._waiting("U0A", voted, T0 + 1000) is None, "each approver decides once"
    assert service(store)._waiting("U0B", voted, T0 + 1000) is not None
    expired = service(store)._waiting("U0B", voted, voted.approval.expires_at_ms)
    assert expired is None


def test_the_view_stays_within_slacks_100_blocks_however_many_runs(store):
    ex = waiting(store)
    many = HomeData(
        "U0A",
        waiting=tuple(
            Waiting(dataclasses.replace(ex, execution_id=f"rb-{i:010d}"), "Replay", ("U0A",))
            for i in range(40)
        ),
        active=tuple(dataclasses.replace(ex, execution_id=f"rb-a{i:09d}") for i in range(40)),
    )
    view = home_view(many, T0)
    assert len(view["blocks"]) <= MAX_VIEW_BLOCKS


def test_hostile_names_never_become_mentions_or_links(store):
    ex = dataclasses.replace(waiting(store), runbook="<!channel> *x*", partner="<https://evil|click>")
    text = json.dumps(home_view(HomeData("U0A", active=(ex,)), T0)["blocks"])
    assert "<!channel>" not in text and "<https://evil" not in text


@pytest.mark.parametrize(
    ("old", "new", "refresh"),
    [
        (None, Status.AWAITING_APPROVAL, True),
        (None, Status.PENDING, False),
        (Status.PENDING, Status.RUNNING, False),
        (Status.RUNNING, Status.AWAITING_APPROVAL, True),
        (Status.AWAITING_APPROVAL, Status.APPROVED, True),
        (Status.AWAITING_APPROVAL, Status.CANCELLED, True),
        (Status.RUNNING, Status.SUCCEEDED, True),
        (Status.RUNNING, Status.RUNNING, False),
    ],
)
def test_which_changes_refresh_homes(store, old, new, refresh):
    ex = waiting(store)
    before = None if old is None else dataclasses.replace(ex, status=old)
    assert home_changed(before, dataclasses.replace(ex, status=new)) is refresh


def test_a_vote_refreshes_homes_while_the_run_still_waits(store):
    ex = waiting(store)
    voted = dataclasses.replace(ex, approval=dataclasses.replace(ex.approval, votes=(Vote("U0A", T0),)))
    assert home_changed(ex, voted)


def test_the_fanout_is_capped_requester_first(store):
    ex = waiting(store)
    crowd = frozenset(f"U0M{i:04d}" for i in range(100))
    people = service(store, lambda group: crowd).concerned(ex)
    assert len(people) == FANOUT_CAP
    assert people[:3] == ["U0REQ", "U0A", "U0B"]


def test_group_members_are_read_once_per_cache_window_and_a_failure_counts_as_empty():
    reads: list[str] = []
    now = [0.0]

    def read(group: str) -> list[str]:
        reads.append(group)
        if group == "S0BROKEN":
            raise RuntimeError("ratelimited")
        return ["U0X"]

    cache = GroupCache(read, clock=lambda: now[0])
    assert cache("S0G") == cache("S0G") == frozenset({"U0X"})
    assert reads == ["S0G"], "tier 2: once per window"
    assert cache("S0BROKEN") == frozenset() and "S0BROKEN" in cache.unread
    now[0] = 31.0
    cache("S0BROKEN")
    assert reads.count("S0BROKEN") == 2, "a failed read is asked again soon"
    now[0] = 301.0
    cache("S0G")
    assert reads.count("S0G") == 2


# -- views.publish on the strict stand-in ----------------------------------------------------------


@pytest.fixture
def slack():
    stand_in = SlackStandIn(DEV_BOT_TOKEN)
    stand_in.start()
    yield stand_in, WebClient(token=DEV_BOT_TOKEN, base_url=stand_in.base_url)
    stand_in.stop()


def home(n: int = 1) -> dict:
    return {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}] * n}


def error_of(call) -> str:
    with pytest.raises(SlackApiError) as raised:
        call()
    return str(raised.value.response["error"])


def test_views_publish_keeps_a_home_per_user_and_guards_it_with_its_hash(slack):
    stand_in, client = slack
    first = client.views_publish(user_id="U0A", view=home())["view"]
    assert stand_in.home_of("U0A")["hash"] == first["hash"]
    second = client.views_publish(user_id="U0A", view=home(2), hash=first["hash"])["view"]
    assert second["id"] == first["id"] and second["hash"] != first["hash"]
    assert (
        error_of(lambda: client.views_publish(user_id="U0A", view=home(), hash=first["hash"]))
        == "hash_conflict"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"view": home()}, "invalid_arguments"),  # no user_id
        ({"user_id": "C0ACMEOPS", "view": home()}, "invalid_arguments"),
        ({"user_id": "U0A", "view": {**home(), "type": "modal"}}, "invalid_arguments"),
        ({"user_id": "U0A", "view": home(101)}, "invalid_arguments"),
        ({"user_id": "U0A", "view": {"type": "home", "blocks": [{"type": "nonsense"}]}}, "invalid_arguments"),
        (
            {
                "user_id": "U0A",
                "view": {
                    "type": "home",
                    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3000}}] * 90,
                },
            },
            "view_too_large",
        ),
    ],
)
def test_views_publish_refuses_what_slack_refuses(slack, args, error):
    _, client = slack
    assert error_of(lambda: client.api_call("views.publish", json=args)) == error


def test_views_publish_is_not_enabled_without_the_home_tab(slack):
    stand_in, client = slack
    stand_in.home_tab_enabled = False
    assert error_of(lambda: client.views_publish(user_id="U0A", view=home())) == "not_enabled"


def test_a_post_to_a_user_id_lands_in_the_apps_dm(slack):
    stand_in, client = slack
    client.chat_postMessage(channel="U0A", text="nothing changed")
    assert [m["text"] for m in stand_in.dms("U0A")] == ["nothing changed"]


def test_a_home_slack_answers_429_waits_for_the_sweeper_without_sleeping_in_the_lane(
    store, slack, monkeypatch
):
    import time

    from bot.slack.client import slack_client
    from bot.slack.home import HomePublisher
    from bot.store.homes import HomeRequest, HomeStore

    stand_in, _ = slack
    monkeypatch.setenv("SLACK_API_URL", stand_in.base_url)
    homes = HomeStore(store.client, store.table)
    homes.opened("U0A", T0)
    publisher = HomePublisher(
        slack_client(DEV_BOT_TOKEN, rate_limit_retries=10),
        homes,
        service(store),
        clock=lambda: T0 / 1000 + 1,
    )
    stand_in.time_scale = 1.0  # Slack's own clock: Retry-After 30 is 30 s
    stand_in.fail("views.publish", status=429, retry_after=30, times=None)
    started = time.monotonic()
    assert publisher.handle(HomeRequest("U0A", T0)) == "waiting"
    assert time.monotonic() - started < 3, "Slack's Retry-After is not waited out in the stream lane"
    assert [c.status for c in stand_in.calls if c.method == "views.publish"] == [429]
    (due,) = store.due(T0 + 10**9)
    assert (due.kind, due.user_id, due.due_at_ms) == ("home", "U0A", T0 + 1_000 + 30_000)
    assert homes.wake("U0A", due.due_at_ms, due.due_at_ms) and not homes.opened("U0A", due.due_at_ms + 1)
    stand_in.clear_faults()
    assert publisher.handle(HomeRequest("U0A", due.due_at_ms)) == "published"
    assert stand_in.home_of("U0A")["type"] == "home"
    assert homes.claim(HomeRequest("U0A", due.due_at_ms), T0 + 2_000) is None, "published once"
