"""Clicks and the reason/comment dialog on the real store (moto): who may decide, what a late or
forged submission changes (nothing), and racing approvers who both count."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import boto3
import pytest

from bot.engine import machine
from bot.engine.model import Risk
from bot.local.slack_api import _invalid_view
from bot.partners.model import KeyAttribute, Partner, PartnerTable, Sla
from bot.slack.approvals import ButtonValue
from bot.slack.decisions import DecisionService, button_value
from bot.store.executions import ExecutionStore
from bot.store.model import EventKind, Execution, Status
from tests.conftest import CountingClient
from tests.unit.engine.runbooks import T0, always, effect, execution, runbook, step

RB = runbook(step("detect"), step("replay", risk=Risk.HIGH, title="Replay missed writes"), step("verify"))
PARTNER = Partner(
    name="partner-acme",
    display_name="Acme",
    region="us-east-1",
    account_id="123456789012",
    role_arn="",
    sla=Sla(15, 120),
    channels=("C0OPS",),
    approvers=("U0A", "U0B", "S0ONCALL"),
    tables={"orders": PartnerTable("orders", "acme-orders", KeyAttribute("pk", "S"))},
    approvals={"high": 2},
)


@dataclass
class Catalog:
    runbooks: dict = field(default_factory=lambda: {RB.name: RB})
    partners: dict = field(default_factory=lambda: {PARTNER.name: PARTNER})


class Executor:
    when = staticmethod(always)


@pytest.fixture
def store(executions_table: str) -> ExecutionStore:
    return ExecutionStore(CountingClient(boto3.client("dynamodb")), executions_table)


def waiting(store: ExecutionStore, execution_id: str = "rb-decide0001") -> Execution:
    ex = execution(RB, execution_id=execution_id, requested_by="U0REQ", quorum=PARTNER.quorum())
    for _ in range(10):
        plan = machine.plan(ex, RB, T0, always, effect)
        if isinstance(plan, machine.Idle):
            break
        if isinstance(plan, machine.Move):
            ex = machine.apply(ex, plan.transition)
        else:
            result = machine.Succeeded(T0, "ok")
            ex = machine.apply(ex, machine.after_step(ex, RB, plan.step, result, T0, always, effect))
    assert ex.status is Status.AWAITING_APPROVAL and ex.approval.required == 2
    assert store.create(ex)
    return ex


def service(store: ExecutionStore, now: int = T0 + 1000) -> DecisionService:
    return DecisionService(
        store, Catalog, Executor, lambda group: frozenset({"U0ONCALL"}), lambda: now, sleep=lambda s: None
    )


def value(ex: Execution, version: int | None = None) -> str:
    v = ex.approval.version if version is None else version
    return json.dumps({"execution_id": ex.execution_id, "step_id": "replay", "version": v})


def metadata(ex: Execution, approve: bool, version: int | None = None) -> str:
    v = ex.approval.version if version is None else version
    return button_value(ButtonValue(ex.execution_id, "replay", v), approve)


def test_the_dialog_opens_only_for_someone_who_may_decide(store):
    ex = waiting(store)
    decisions = service(store)
    assert "you started this run" in decisions.dialog("U0REQ", value(ex), approve=False).refusal
    assert "only Acme's approvers" in decisions.dialog("U0STRANGER", value(ex), approve=False).refusal
    dialog = decisions.dialog("U0ONCALL", value(ex), approve=False)  # through the user group
    assert dialog.view is not None and not dialog.refusal
    assert _invalid_view(dialog.view) == [], "Slack would open it"
    assert json.loads(dialog.view["private_metadata"])["decision"] == "reject"
    shown = json.dumps(dialog.view["blocks"])
    assert "Replay missed writes" in shown and "0 of 2 approvals" in shown
    assert store.get(ex.execution_id).version == ex.version, "opening a dialog decides nothing"


def test_a_submitted_reason_rejects_with_it_on_the_timeline_and_the_record(store):
    ex = waiting(store)
    outcome = service(store).submit("U0B", metadata(ex, approve=False), "  partner is\nmid-deploy ")
    assert outcome.decided
    after = store.get(ex.execution_id)
    (event,) = [e for e in after.timeline if e.kind is EventKind.APPROVAL_REJECTED]
    assert event.actor == "U0B" and event.summary == "rejected: partner is mid-deploy"
    assert after.error["reason"] == "partner is mid-deploy" and after.status is Status.FAILED


@pytest.mark.parametrize(
    ("note", "says"),
    [
        ("", "Say why you reject this step"),
        ("   \n ", "Say why you reject this step"),
        ("x" * 1001, "under 1000"),
    ],
)
def test_a_rejection_without_a_usable_reason_is_refused_on_the_field(store, note, says):
    ex = waiting(store)
    outcome = service(store).submit("U0B", metadata(ex, approve=False), note)
    assert not outcome.decided and says in outcome.field_error and not outcome.refusal
    assert store.get(ex.execution_id).version == ex.version


def test_a_submission_from_a_stale_dialog_changes_nothing(store):
    ex = waiting(store)
    outcome = service(store).submit("U0A", metadata(ex, approve=True, version=ex.approval.version - 1), "ok")
    assert not outcome.decided and "out of date" in outcome.refusal
    forged = service(store).submit("U0A", metadata(ex, approve=True, version=ex.version + 5), "ok")
    assert not forged.decided and "out of date" in forged.refusal
    assert store.get(ex.execution_id).version == ex.version


def test_a_submission_after_the_expiry_changes_nothing(store):
    ex = waiting(store)
    late = service(store, now=ex.approval.expires_at_ms)
    outcome = late.submit("U0A", metadata(ex, approve=False), "too late")
    assert not outcome.decided and "expired" in outcome.refusal
    assert store.get(ex.execution_id).version == ex.version


def test_the_requester_and_a_non_approver_cannot_decide_by_submitting_a_dialog(store):
    ex = waiting(store)
    requester = service(store).submit("U0REQ", metadata(ex, approve=True), "mine")
    assert not requester.decided and "you started this run" in requester.refusal
    stranger = service(store).submit("U0STRANGER", metadata(ex, approve=False), "no")
    assert not stranger.decided and "only Acme's approvers" in stranger.refusal
    assert store.get(ex.execution_id).version == ex.version


def test_a_dialog_that_does_not_carry_an_approval_is_refused(store):
    waiting(store)
    for bad in ("", "{}", "not json", json.dumps({"execution_id": "x", "step_id": "y", "version": "z"})):
        outcome = service(store).submit("U0A", bad, "ok")
        assert not outcome.decided and outcome.refusal


def test_votes_after_a_reminder_still_count_with_the_buttons_posted_before_it(store):
    ex = waiting(store)
    reminded = machine.on_due(ex, RB, ex.approval.remind_at_ms, always, effect)
    store.move(ex.execution_id, reminded, "sweeper", ex.approval.remind_at_ms)
    assert service(store).decide("U0A", value(ex), approve=True).decided
    assert [v.user for v in store.get(ex.execution_id).approval.votes] == ["U0A"]


def race(decisions: DecisionService, ex: Execution, users: tuple[str, ...]) -> list:
    """Each user clicks Approve at the same moment, from their own thread."""
    results: list = []
    go = threading.Barrier(len(users))

    def click(user: str) -> None:
        go.wait()
        results.append(decisions.decide(user, value(ex), approve=True))

    racing = [threading.Thread(target=click, args=(u,)) for u in users]
    for t in racing:
        t.start()
    for t in racing:
        t.join()
    return results


def test_two_approvers_clicking_at_once_both_count(store):
    for i in range(8):
        ex = waiting(store, f"rb-race{i:06d}")
        results = race(service(store), ex, ("U0A", "U0B"))
        after = store.get(ex.execution_id)
        assert [r.decided for r in results] == [True, True], "no approval lost"
        assert after.status is Status.APPROVED
        assert sorted(v.user for v in after.approval.votes) == ["U0A", "U0B"]
        kinds = [e.kind for e in after.timeline if e.kind.value.startswith("approval_")]
        assert kinds == [EventKind.APPROVAL_REQUESTED, EventKind.APPROVAL_VOTED, EventKind.APPROVAL_GRANTED]


def test_one_approver_clicking_twice_at_once_counts_once(store):
    ex = waiting(store)
    results = race(service(store), ex, ("U0A", "U0A"))
    after = store.get(ex.execution_id)
    assert [v.user for v in after.approval.votes] == ["U0A"] and after.status is Status.AWAITING_APPROVAL
    assert sorted(r.decided for r in results) == [False, True]
    assert any("each approver decides once" in r.explanation for r in results)


def test_an_approval_already_decided_says_by_whom(store):
    ex = waiting(store)
    assert service(store).decide("U0A", value(ex), approve=False).decided
    late = service(store).decide("U0B", value(ex), approve=True)
    assert not late.decided and "already rejected by <@U0A>" in late.explanation
