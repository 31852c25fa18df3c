"""History from the sparse history-index: a partner's runs and a person's runs, newest first, by
Query only (never a Scan), paged by a cursor that cannot reach another partition."""

from __future__ import annotations

import dataclasses
from typing import Any

import boto3
import pytest

from bot.catalog import load_catalog
from bot.engine.machine import Transition
from bot.engine.starts import new_execution
from bot.slack.grammar import new_execution_id
from bot.store import keys
from bot.store.executions import ExecutionStore
from bot.store.history import MAX_QUERIES, QUERY_PAGE, BadCursor, HistoryFilter, HistoryStore
from bot.store.model import ACTIVE, EventKind, Status, TimelineEvent

T0 = 1_700_000_000_000
MINUTE = 60_000


class RecordingClient:
    """boto3's client, with the names of the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(**request: Any) -> Any:
            self.calls.append((name, request))
            return attribute(**request)

        return call


@pytest.fixture
def stores(executions_table):
    client = RecordingClient(boto3.client("dynamodb"))
    return ExecutionStore(client, executions_table), HistoryStore(client, executions_table), client


def run(
    store: ExecutionStore,
    n: int,
    *,
    runbook: str = "throttle",
    partner: str = "partner-acme",
    by: str = "U0ONCALL",
    channel: str = "C0ACMEOPS",
    status: Status = Status.SUCCEEDED,
    drill: bool = False,
) -> str:
    catalog = load_catalog()
    execution_id = new_execution_id(f"history-test-{n}-{partner}-{runbook}")
    ex = new_execution(
        execution_id,
        catalog.runbooks[runbook],
        catalog.partners[partner],
        {},
        requested_by=by,
        channel=channel,
        now_ms=T0 + n * MINUTE,
        trigger="alarm" if by.startswith("alarm:") else "slash",
        drill=drill,
    )
    assert store.create(ex)
    if status is not Status.PENDING:
        store.commit(execution_id, Transition(0, T0 + n * MINUTE + 5_000, status))
    return execution_id


def test_a_partners_runs_come_newest_first_with_what_a_history_line_shows(stores):
    store, history, client = stores
    older = run(store, 1)
    newer = run(store, 2, status=Status.FAILED, drill=True)
    run(store, 3, partner="partner-globex", channel="C0GLOBEXOPS")  # another partner's

    page = history.partner_runs(HistoryFilter("partner-acme", since_ms=T0))
    assert [r.execution_id for r in page.runs] == [newer, older]
    assert page.cursor == ""
    first = page.runs[0]
    assert (first.runbook, first.partner, first.status, first.requested_by) == (
        "throttle",
        "partner-acme",
        Status.FAILED,
        "U0ONCALL",
    )
    assert first.drill and first.duration_ms == 5_000 and first.created_at_ms == T0 + 2 * MINUTE
    assert {name for name, _ in client.calls} >= {"query"} and "scan" not in {n for n, _ in client.calls}
    (query,) = [r for name, r in client.calls if name == "query"]
    assert query["IndexName"] == keys.HISTORY_INDEX and query["ScanIndexForward"] is False


def test_runbook_status_since_channel_and_requester_narrow_the_runs(stores):
    store, history, _ = stores
    throttle_ok = run(store, 1)
    failed = run(store, 2, status=Status.FAILED)
    active = run(store, 3, status=Status.AWAITING_APPROVAL, by="U0OTHER")
    consistency = run(store, 4, runbook="consistency", channel="C0ELSEWHERE")

    def ids(**given: Any) -> list[str]:
        wanted = HistoryFilter("partner-acme", **{"since_ms": T0, **given})
        return [r.execution_id for r in history.partner_runs(wanted).runs]

    assert ids(runbook="throttle") == [active, failed, throttle_ok]
    assert ids(statuses=frozenset({Status.FAILED})) == [failed]
    assert ids(statuses=ACTIVE) == [active]
    assert ids(since_ms=T0 + 2 * MINUTE + 1) == [consistency, active]
    assert ids(channel="C0ELSEWHERE") == [consistency]
    assert ids(requested_by="U0OTHER") == [active]


def test_pages_follow_the_cursor_to_the_end_each_run_once(stores):
    store, history, _ = stores
    made = [run(store, n) for n in range(23)]
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = history.partner_runs(HistoryFilter("partner-acme", since_ms=T0), limit=10, cursor=cursor)
        seen += [r.execution_id for r in page.runs]
        pages += 1
        if not page.cursor:
            break
        cursor = page.cursor
    assert seen == list(reversed(made))
    assert pages == 3


def test_a_filter_that_matches_little_reads_a_bounded_number_of_pages_then_hands_a_cursor(stores):
    store, history, client = stores
    rare = run(store, 0, status=Status.FAILED)  # the oldest
    for n in range(1, QUERY_PAGE * MAX_QUERIES + 5):
        filler = new_execution_id(f"filler-{n}")
        client._client.put_item(  # cheap copies: state items in the partner's partition
            TableName=store.table,
            Item={
                **{k: {"S": v} for k, v in keys.state_key(filler).items()},
                keys.HISTORY_PK: {"S": keys.partner_history("partner-acme")},
                keys.HISTORY_AT: {"N": str(T0 + n * MINUTE)},
                "execution_id": {"S": filler},
                "runbook": {"S": "throttle"},
                "status": {"S": "SUCCEEDED"},
            },
        )
    client.calls.clear()
    wanted = HistoryFilter("partner-acme", since_ms=T0, statuses=frozenset({Status.FAILED}))
    page = history.partner_runs(wanted)
    assert page.runs == () and page.cursor, "nothing found yet, and more to read"
    assert len([c for c in client.calls if c[0] == "query"]) == MAX_QUERIES
    page = history.partner_runs(wanted, cursor=page.cursor)
    assert [r.execution_id for r in page.runs] == [rare]


def test_a_cursor_is_checked_and_never_names_a_partition(stores):
    _, history, _ = stores
    wanted = HistoryFilter("partner-acme", since_ms=T0)
    for bad in ["", "x", "1.rb-AAAAAAAAAA", "1.rb-abcdefghij.PARTNER#partner-globex", '{"pk": "x"}']:
        if bad:
            with pytest.raises(BadCursor):
                history.partner_runs(wanted, cursor=bad)
    globex = HistoryFilter("partner-globex", since_ms=T0)
    assert history.partner_runs(globex, cursor=f"{T0 + 10 * MINUTE}.rb-abcdefghij").runs == ()


def test_who_approved_is_kept_on_the_run_for_history(stores):
    store, history, _ = stores
    execution_id = run(store, 1, status=Status.PENDING)
    granted = [
        TimelineEvent(seq, T0, EventKind.APPROVAL_GRANTED, "approved", step_id=step, actor=actor)
        for seq, (step, actor) in enumerate([("mitigate", "U0LEAD"), ("replay", "U0SRE")], 1)
    ]
    store.commit(execution_id, Transition(0, T0 + 1, Status.APPROVED, events=(granted[0],)))
    store.commit(execution_id, Transition(1, T0 + 2, Status.APPROVED, events=(granted[1],)))
    (line,) = history.partner_runs(HistoryFilter("partner-acme", since_ms=T0)).runs
    assert line.approved_by == ("U0LEAD", "U0SRE")
    assert store.get(execution_id).status is Status.APPROVED, "the state item still reads as an execution"


def test_a_persons_runs_come_from_the_same_index_newest_first(stores):
    store, history, _ = stores
    mine = [
        run(store, 1, by="U0ME"),
        run(store, 2, by="U0ME", partner="partner-globex", channel="C0GLOBEXOPS"),
    ]
    run(store, 3, by="U0SOMEONEELSE")
    alarm = run(store, 4, by="alarm:acme-orders-WriteThrottle")

    page = history.requester_runs("U0ME", since_ms=T0)
    assert [r.execution_id for r in page.runs] == list(reversed(mine))
    assert {r.partner for r in page.runs} == {"partner-acme", "partner-globex"}
    assert (
        store.client.get_item(
            TableName=store.table, Key={k: {"S": v} for k, v in keys.requester_key(alarm).items()}
        ).get("Item")
        is None
    ), "an alarm's run has nobody to list it for"


def test_a_redelivered_start_writes_neither_the_run_nor_its_history_entry_twice(stores):
    store, _, _ = stores
    execution_id = run(store, 1, status=Status.PENDING)
    ex = store.get(execution_id)
    assert store.create(dataclasses.replace(ex, version=0)) is False
