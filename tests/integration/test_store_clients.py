"""The store behaves the same on boto3's client and on the ack path's lean client: each DynamoDB
error becomes the same outcome (False, None, TransitionConflict, ClaimHeld) on both."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from bot.engine import machine
from bot.engine.starts import new_execution
from bot.exceptions import ClaimHeld, TransitionConflict
from bot.store import keys
from bot.store.executions import ExecutionStore
from bot.store.model import Status
from tests.unit.engine.test_executor import PARTNER, five_steps

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def aws() -> Iterator[object]:
    from bot.local.aws import EmbeddedAws
    from bot.local.template import create_tables, load_template

    with EmbeddedAws(engine="moto") as embedded:
        embedded.tables = create_tables(
            embedded.client("dynamodb"), load_template(), lambda lid: f"clients-{lid}"
        )
        yield embedded


@pytest.fixture(params=["boto3", "lean"])
def store(aws, request, monkeypatch) -> ExecutionStore:
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    if request.param == "boto3":
        client = aws.client("dynamodb")
    else:
        from bot.store.lean import dynamodb

        client = dynamodb()
    return ExecutionStore(client, aws.tables["ExecutionsTable"])


def run(eid: str):
    return new_execution(
        eid, five_steps(), PARTNER, {}, requested_by="U0REQ", channel="C0TEST", now_ms=10**12, trigger="slash"
    )


def test_creating_twice_is_a_redelivery_not_an_error(store, request):
    ex = run(f"rb-{request.node.callspec.id[:4]}create1")
    assert store.create(ex) is True
    assert store.create(ex) is False
    assert store.get(ex.execution_id).status is Status.PENDING


def test_a_lost_race_is_a_transition_conflict_and_a_held_claim_is_claim_held(store, request):
    ex = run(f"rb-{request.node.callspec.id[:4]}commit1")
    store.create(ex)
    t = machine.Transition(0, 10**12, Status.RUNNING, {"cursor": "s2"})
    store.commit(ex.execution_id, t)
    with pytest.raises(TransitionConflict):
        store.commit(ex.execution_id, t)  # version 0 is gone
    assert store.claim(ex.execution_id, 1, "a", 10**12, 60_000) is True
    assert store.claim(ex.execution_id, 1, "b", 10**12, 60_000) is False
    with pytest.raises(ClaimHeld):
        store.move(ex.execution_id, dataclasses.replace(t, from_version=1), "sweeper", 10**12)
    assert store.get(ex.execution_id).version == 1


def test_locks_and_cancels_answer_alike(store, request):
    tag = request.node.callspec.id[:4]
    first, second = run(f"rb-{tag}locks01"), run(f"rb-{tag}locks02")
    lock = keys.table_lock_key("partner-test", f"{tag}-orders")
    assert store.create_locked(first, [lock]) is None
    assert store.lock_holder(lock) == first.execution_id
    assert store.create_locked(second, [lock]) == first.execution_id
    assert store.request_cancel(first.execution_id, "U0LEAD").cancel_requested_by == "U0LEAD"
    assert store.request_cancel(first.execution_id, "U0LEAD") is None  # already being cancelled
    assert store.purge(first.execution_id, [lock]) >= 2  # the state item and the lock
    assert store.lock_holder(lock) is None
