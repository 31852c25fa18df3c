"""App Home requests and Events API receipts on the real table (moto): a retried event changes
nothing, requests coalesce while one waits, refreshes only reach homes that were opened, and a
request is published once."""

from __future__ import annotations

import boto3
import pytest

from bot.store import keys
from bot.store.executions import Due, ExecutionStore
from bot.store.homes import (
    PUBLISHED,
    STALE_REQUEST_MS,
    WAITING,
    HomeRequest,
    HomeStore,
    requested_home,
)

T0 = 1_700_000_000_000


@pytest.fixture
def homes(executions_table: str) -> HomeStore:
    return HomeStore(boto3.client("dynamodb"), executions_table)


def item(homes: HomeStore, user: str) -> dict:
    key = {k: {"S": v} for k, v in keys.home_key(user).items()}
    return homes.client.get_item(TableName=homes.table, Key=key).get("Item") or {}


def request_of(homes: HomeStore, user: str) -> HomeRequest:
    got = item(homes, user)
    return HomeRequest(user, int(got["requested_at_ms"]["N"]), got["reason"]["S"])


def test_a_retried_event_is_seen_once_and_its_receipt_expires(homes):
    assert homes.first_delivery("Ev0ABC", T0)
    assert not homes.first_delivery("Ev0ABC", T0 + 60_000), "Slack's retry: same event_id"
    key = {k: {"S": v} for k, v in keys.event_receipt_key("Ev0ABC").items()}
    receipt = homes.client.get_item(TableName=homes.table, Key=key)["Item"]
    assert int(receipt[keys.TTL_ATTRIBUTE]["N"]) > T0 // 1000
    homes.forget_delivery("Ev0ABC")
    assert homes.first_delivery("Ev0ABC", T0 + 120_000), "a delivery that failed is handled on retry"


def test_an_event_without_an_id_cannot_be_deduplicated(homes):
    with pytest.raises(ValueError, match="event_id"):
        homes.first_delivery("", T0)


def test_openings_coalesce_while_a_request_waits_and_ask_again_once_it_is_stale(homes):
    assert homes.opened("U0A", T0)
    assert not homes.opened("U0A", T0 + 1_000), "one request waits already"
    assert homes.opened("U0A", T0 + STALE_REQUEST_MS + 1), "a request nobody claimed is presumed lost"


def test_a_refresh_reaches_only_homes_that_were_opened(homes):
    assert not homes.refresh("U0NEVER", "rb-abcdefghij", T0)
    assert item(homes, "U0NEVER") == {}
    homes.opened("U0A", T0)
    wanted = request_of(homes, "U0A")
    assert homes.claim(wanted, T0 + 10) == ""
    assert homes.refresh("U0A", "rb-abcdefghij", T0 + 20), "claimed: a later change asks again"
    assert item(homes, "U0A")["reason"]["S"] == "refresh"


def test_a_request_is_claimed_once_and_the_hash_kept_for_the_next_publish(homes):
    homes.opened("U0A", T0)
    wanted = request_of(homes, "U0A")
    assert homes.claim(wanted, T0 + 1) == ""
    assert homes.claim(wanted, T0 + 2) is None, "a redelivered record publishes nothing twice"
    homes.published("U0A", "1700000000.abcd")
    homes.finish(wanted, PUBLISHED, "", T0 + 3)
    assert item(homes, "U0A")["home_status"]["S"] == PUBLISHED
    homes.opened("U0A", T0 + 4)
    assert homes.claim(request_of(homes, "U0A"), T0 + 5) == "1700000000.abcd"


def test_only_a_requested_home_is_read_from_the_stream(homes):
    homes.opened("U0A", T0)
    image = item(homes, "U0A")
    record = {"eventName": "INSERT", "dynamodb": {"NewImage": image}}
    assert requested_home(record) == HomeRequest("U0A", T0, "opened")
    image["home_status"] = {"S": "publishing"}
    assert requested_home(record) is None, "its own claim"
    assert requested_home({"eventName": "REMOVE", "dynamodb": {"OldImage": image}}) is None


def test_a_request_given_back_is_claimed_again_by_the_records_retry(homes):
    homes.opened("U0A", T0)
    wanted = request_of(homes, "U0A")
    assert homes.claim(wanted, T0 + 1) == ""
    homes.release(wanted)  # Slack answered 5xx
    assert item(homes, "U0A")["home_status"]["S"] == "requested"
    assert homes.claim(wanted, T0 + 2) == ""


def test_a_home_slack_paced_waits_in_the_due_index_and_the_sweeper_asks_again(homes):
    homes.opened("U0A", T0)
    wanted = request_of(homes, "U0A")
    assert homes.claim(wanted, T0 + 1) == ""
    homes.defer(wanted, T0 + 30_000)  # Slack answered 429, Retry-After 30
    waiting = item(homes, "U0A")
    assert waiting["home_status"]["S"] == WAITING
    record = {"eventName": "MODIFY", "dynamodb": {"NewImage": waiting}}
    assert requested_home(record) is None, "its own record publishes nothing: the lane moves on"
    store = ExecutionStore(homes.client, homes.table)
    assert list(store.due(T0 + 29_999)) == []
    assert list(store.due(T0 + 30_000)) == [Due("", "home", T0 + 30_000, user_id="U0A")]
    assert not homes.opened("U0A", T0 + 2_000), "an opening meanwhile joins the waiting request"
    assert not homes.wake("U0A", T0 + 1, T0 + 30_001), "only the wait it was due for"
    assert homes.wake("U0A", T0 + 30_000, T0 + 30_001)
    asked = item(homes, "U0A")
    assert requested_home({"eventName": "MODIFY", "dynamodb": {"NewImage": asked}}) == HomeRequest(
        "U0A", T0 + 30_001, "opened"
    )
    assert keys.DUE_AT not in asked and list(store.due(T0 + 10**9)) == [], "out of the due-index"
    assert not homes.wake("U0A", T0 + 30_000, T0 + 30_002), "woken once"


def test_a_waiting_home_whose_wake_was_lost_is_asked_for_again_and_leaves_the_due_index(homes):
    homes.opened("U0A", T0)
    wanted = request_of(homes, "U0A")
    homes.claim(wanted, T0 + 1)
    homes.defer(wanted, T0 + 1_000)
    assert homes.opened("U0A", T0 + 1_000 + STALE_REQUEST_MS + 1), "a wait a minute overdue is presumed lost"
    assert keys.DUE_AT not in item(homes, "U0A")
    assert list(ExecutionStore(homes.client, homes.table).due(T0 + 10**9)) == []


def test_the_sweepers_pass_asks_again_for_a_home_whose_retry_after_passed(homes):
    from bot.handlers.sweeper import sweep

    homes.opened("U0A", T0)
    wanted = request_of(homes, "U0A")
    homes.claim(wanted, T0 + 1)
    homes.defer(wanted, T0 + 5_000)
    store = ExecutionStore(homes.client, homes.table)
    assert sweep(store, None, None, T0 + 4_999).moved == {}
    assert sweep(store, None, None, T0 + 5_000).moved == {"nudge": 1}
    assert item(homes, "U0A")["home_status"]["S"] == "requested"
