"""A drill never touches production: every runbook × every shipped partner, through the pipeline.

Before and after each drill, every production table of every partner (all items, billing mode
and capacity) and every production queue (every message body, visible or in flight) must be exactly the same.
Items and messages are read from the embedded backend: receiving would change a queue, and a
Scan through moto's front end is a hundred times slower.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bot.catalog import load_catalog
from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.store.model import Status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOG = load_catalog()
DRILLER = "U0DRILLBOT"  # the requester is never an approver


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    from bot.demo import seed_demo

    with LocalPipeline(PipelineOptions(engine="moto", sweep_interval=0.3)) as running:
        seed_demo(boto3.session.Session())
        yield running


def production(session: Any) -> dict[str, Any]:
    """Everything a drill must leave alone, as plain comparable data."""
    ddb = session.client("dynamodb")
    seen: dict[str, Any] = {}
    for partner in CATALOG.partners.values():
        for table in partner.tables.values():
            described = ddb.describe_table(TableName=table.name)["Table"]
            seen[f"table {table.name}"] = {
                "billing": (described.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
                "capacity": {
                    k: v
                    for k, v in (described.get("ProvisionedThroughput") or {}).items()
                    if k in {"ReadCapacityUnits", "WriteCapacityUnits"}
                },
                "items": table_contents(table.name),
            }
        store = partner.failed_requests
        if store and store.kind == "table":
            seen[f"store {store.name}"] = table_contents(store.name)
        elif store:
            seen[f"queue {store.name}"] = queue_contents(store.name)
    return seen


def table_contents(name: str) -> list[str]:
    """Every item of a table, read from the embedded backend: a Scan through moto's HTTP front
    end takes about 4 s for the demo's 3,700 items, and every isolation test takes two of them."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(name)
    return sorted(json.dumps(item.to_json(), sort_keys=True) for item in table.all_items())


def queue_contents(name: str) -> list[str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].queues[name]
    return sorted(m.body for m in queue._messages)  # visible and in flight alike


def drive_drill(pipeline: LocalPipeline, runbook: str, partner: str) -> Any:
    p = CATALOG.partners[partner]
    channel = p.channels[0]
    response = pipeline.command(
        f"drill {runbook} {partner} faults=throttle=0.05 for=3m", user_id=DRILLER, channel_id=channel
    )
    answer = json.loads(response["body"])["text"]
    assert answer.startswith("Started drill of"), answer
    execution_id = answer.split("execution `")[1].split("`")[0]
    approver = next(a for a in p.approvers if a.startswith("U"))
    deadline = time.monotonic() + 120
    decided: set[tuple[str, int]] = set()
    while time.monotonic() < deadline:
        ex = pipeline.execution(execution_id)
        if ex.status.terminal:
            return ex
        if (
            ex.status is Status.AWAITING_APPROVAL
            and ex.approval
            and (ex.approval.step_id, ex.version) not in decided
        ):
            decided.add((ex.approval.step_id, ex.version))
            value = json.dumps(
                {"execution_id": execution_id, "step_id": ex.approval.step_id, "version": ex.version}
            )
            pipeline.click("approve", value, user_id=approver, channel_id=channel)
        time.sleep(0.1)
    raise AssertionError(f"drill {runbook} {partner} did not end: {pipeline.execution(execution_id)}")


@pytest.mark.parametrize("partner", sorted(CATALOG.partners))
@pytest.mark.parametrize("runbook", sorted(CATALOG.runbooks))
def test_a_drill_leaves_every_production_table_and_queue_exactly_as_it_was(pipeline, runbook, partner):
    session = boto3.session.Session()
    before = production(session)
    ex = drive_drill(pipeline, runbook, partner)
    assert pipeline.drain(60)
    after = production(session)
    assert after == before, f"drill {runbook} {partner} ({ex.status.value}) changed production"
    assert ex.drill and ex.status.terminal
    assert not any(e.error_code == "DrillTouchesProduction" for e in ex.timeline), (
        "the drill view resolved everything to drill targets; the guard never had to refuse"
    )
    thread = [
        m
        for m in pipeline.slack.messages(ex.channel)
        if (m.get("metadata") or {}).get("event_payload", {}).get("execution_id") == ex.execution_id
    ]
    assert thread and thread[0]["text"].startswith("[DRILL]"), "the parent says it is a drill"
    replies = pipeline.slack.thread(ex.channel, thread[0]["ts"])[1:]
    assert replies and all(r["text"].startswith("[DRILL]") for r in replies), "every reply says so"
