"""`/runbook retry` through the whole local pipeline: a run fails at a risky step because of an
injected fault, two people retry it at once, one resumes it in the same thread, the step is
approved again and runs with a fresh idempotency key, and the run succeeds."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.actions.base import REGISTRY, ActionContext, StepOutcome, register
from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.store import keys
from bot.store.model import EventKind, Status
from tests.integration.test_pipeline import (
    approve,
    assert_timeline_in_channel_once_in_order,
    channel_thread,
    start,
)

REPO = Path(__file__).resolve().parents[2]
RESUMABLE_RUNBOOK = """\
# yaml-language-server: $schema=./schema.json
name: resumable
title: Resumable rehearsal
description: A step with an effect, a risky change that fails until the run is resumed, and a last step.
steps:
  - {id: prepare, action: retry.fault, title: Prepare, timeout_seconds: 5}
  - id: change
    action: retry.fault
    title: Apply the change
    risk: high
    inputs: {fail_until_resumed: true}
    timeout_seconds: 5
  - {id: finish, action: retry.fault, title: Finish, timeout_seconds: 5}
"""


class FaultUntilResumed:
    """An idempotent effect that fails (not retryable) on every attempt of a run that was never
    resumed, when told to: the injected fault a retry gets past."""

    name = "retry.fault"
    outputs: tuple[str, ...] = ("key",)
    always_high_risk = False
    inputs_schema: dict = {"type": "object"}

    def __init__(self) -> None:
        self.applied: dict[str, str] = {}  # idempotency key -> step
        self.lock = threading.Lock()

    def run(self, ctx: ActionContext, inputs: dict) -> StepOutcome:
        from bot.exceptions import ActionError

        first_life = ctx.idempotency_key == keys.idempotency_key(ctx.execution_id, ctx.step_id, ctx.attempt)
        if inputs.get("fail_until_resumed") and first_life:
            raise ActionError("ValidationException", "injected fault: the change is refused", retryable=False)
        with self.lock:
            self.applied.setdefault(ctx.idempotency_key, ctx.step_id)
        return StepOutcome.done(f"{ctx.step_id} applied", {"key": ctx.idempotency_key})

    def describe_effect(self, ctx: ActionContext, inputs: dict) -> str:
        return f"applies {ctx.step_id}"


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultUntilResumed]:
    action = REGISTRY.get("retry.fault") or register(FaultUntilResumed())
    assert isinstance(action, FaultUntilResumed)
    yield action
    REGISTRY.pop("retry.fault", None)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("moto", marks=pytest.mark.integration),
        pytest.param("ddblocal", marks=[pytest.mark.integration, pytest.mark.ddblocal]),
    ],
)
def resumable(request, tmp_path_factory, fault) -> Iterator[LocalPipeline]:
    runbooks = tmp_path_factory.mktemp("runbooks")
    shutil.copytree(
        REPO / "runbooks", runbooks, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".compiled")
    )
    (runbooks / "resumable.yaml").write_text(RESUMABLE_RUNBOOK)
    options = PipelineOptions(
        engine=request.param, sweep_interval=0.3, extra_env={"RUNBOOKS_DIR": str(runbooks)}
    )
    with LocalPipeline(options) as pipeline:
        yield pipeline


def answer_of(response: dict) -> str:
    assert response["statusCode"] == 200, response
    return json.loads(response["body"])["text"]


def test_a_failed_run_is_resumed_in_its_thread_once_and_succeeds(resumable, fault):
    execution_id = start(resumable, "resumable partner-acme")
    ex = resumable.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    approve(resumable, execution_id, "U0ACMELEAD")
    failed = resumable.wait_for(execution_id, {"FAILED", "SUCCEEDED"}, 60)
    assert failed.status is Status.FAILED and failed.error["step"] == "change", failed.error
    assert failed.expires_at is not None
    assert_timeline_in_channel_once_in_order(resumable, execution_id)
    parent_before, _ = channel_thread(resumable, execution_id)
    assert "FAILED" in parent_before["text"]

    answers: dict[str, str] = {}

    def retry(user: str) -> None:
        answers[user] = answer_of(resumable.command(f"retry {execution_id}", user_id=user))

    racing = [threading.Thread(target=retry, args=(user,)) for user in ("U0DEVONCALL", "U0ACMELEAD")]
    for thread in racing:
        thread.start()
    for thread in racing:
        thread.join()
    resumed = [user for user, text in answers.items() if text.startswith("Resuming")]
    assert len(resumed) == 1, answers
    (other,) = set(answers) - set(resumed)
    assert "being resumed by someone else" in answers[other] or "not ended" in answers[other], answers[other]

    ex = resumable.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)
    assert ex.approval.step_id == "change", "the risky failed step asks for approval again"
    assert ex.version > failed.version and ex.reopened == 1
    events = [e for e in ex.timeline if e.kind is EventKind.RUN_RESUMED]
    assert len(events) == 1 and events[0].actor == resumed[0] and events[0].step_id == "change"
    approve(resumable, execution_id, "U0ACMESRE")
    done = resumable.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 60)
    assert done.status is Status.SUCCEEDED, done.error
    assert done.steps["prepare"] == failed.steps["prepare"], "the completed step was not run again"
    assert done.steps["change"].outputs["key"] == f"{execution_id}:change:1:r1", "a fresh idempotency key"
    assert sorted(s for k, s in fault.applied.items() if k.startswith(execution_id)) == [
        "change",
        "finish",
        "prepare",
    ]

    assert_timeline_in_channel_once_in_order(resumable, execution_id)
    parent, replies = channel_thread(resumable, execution_id)
    assert parent["ts"] == parent_before["ts"] and "SUCCEEDED" in parent["text"]
    kinds = [e.kind for e in done.timeline]
    assert kinds.count(EventKind.RUN_FAILED) == 1 and kinds[-1] is EventKind.RUN_SUCCEEDED
    resumed_reply = replies[[e.kind for e in done.timeline].index(EventKind.RUN_RESUMED)]
    assert f"<@{resumed[0]}>" in json.dumps(resumed_reply["blocks"])

    again = answer_of(resumable.command(f"retry {execution_id}"))
    assert "already SUCCEEDED; there is nothing to resume" in again
