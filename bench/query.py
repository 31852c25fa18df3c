"""Resuming a 100-page query after a crash at page 60: how many pages does the resume read?

`dynamodb.query` saves its cursor (LastEvaluatedKey) in a progress item after every page, and
the engine commits a checkpoint every `checkpoint_every_pages` (10). The crash kills the sandbox
while page 60 is being read; the resume starts from the newer of the two. Target: the resume
reads <= 41 pages (pages 60..100). For comparison: resuming from the engine's checkpoint alone,
and starting over. Asserts nothing.

    python bench/query.py            # 100 pages of 100 items
    python bench/query.py --short    # CI: the same (it takes a few seconds)
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import Crash, drive_step, executions_store

PAGES = 100
PAGE_SIZE = 100


class Pages:
    """Counts Query calls on the partner client; raises Crash on the `crash_at`-th one."""

    def __init__(self, crash_at: int | None) -> None:
        self.crash_at, self.calls, self.after_crash = crash_at, 0, 0
        self.crashed = False

    def __call__(self, **_: Any) -> None:
        self.calls += 1
        if self.crashed:
            self.after_crash += 1
        if self.crash_at is not None and self.calls == self.crash_at and not self.crashed:
            self.crashed = True
            raise Crash


def seed(client: Any) -> None:
    client.create_table(
        TableName="bench-events",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for start in range(0, PAGES * PAGE_SIZE, 25):
        client.batch_write_item(
            RequestItems={
                "bench-events": [
                    {"PutRequest": {"Item": {"pk": {"S": "PARTNER#acme"}, "sk": {"S": f"EVENT#{n:07d}"}}}}
                    for n in range(start, start + 25)
                ]
            }
        )


def resume(store: Any, crash_at: int | None, progress: bool, label: str) -> dict[str, Any]:
    import bot.actions.dynamodb  # noqa: F401 - registers the action
    from bot.actions.base import REGISTRY, ActionContext
    from bot.catalog import load_catalog
    from bot.partners.sessions import PartnerSession

    partner = load_catalog().partners["partner-acme"]
    session = PartnerSession(partner)
    pages = Pages(crash_at)
    session.client("dynamodb").meta.events.register("before-call.dynamodb.Query", pages)
    execution_id = f"bench-query-{label}"

    def context(**kw: Any) -> ActionContext:
        if not progress:
            kw["save_progress"] = lambda state: None
        return ActionContext(
            execution_id=execution_id,
            step_id="read",
            attempt=1,
            idempotency_key=f"{execution_id}#read#1",
            partner=partner,
            aws=session,
            params={},
            **kw,
        )

    inputs = {
        "table": "bench-events",
        "key_condition": "pk = :pk",
        "values": {":pk": "PARTNER#acme"},
        "page_size": PAGE_SIZE,
        "checkpoint_every_pages": 10,
    }
    outcome, crashes = drive_step(REGISTRY["dynamodb.query"], inputs, context, store, execution_id, "read")
    return {
        "pages": outcome.outputs["pages"],
        "items": outcome.outputs["items_returned"],
        "reads": pages.calls - (1 if pages.crashed else 0),  # the crashed call never read
        "after_crash": pages.after_crash,
        "crashes": crashes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="CI mode (the same run: it is quick)")
    parser.parse_args()

    import boto3
    from moto import mock_aws

    with mock_aws():
        store = executions_store()
        seed(boto3.client("dynamodb"))
        clean = resume(store, None, True, "clean")
        saved = resume(store, 60, True, "progress")
        engine_only = resume(store, 60, False, "engine-only")

    print(f"query: {PAGES} pages of {PAGE_SIZE} items, crash while reading page 60 (moto)")
    print(f"  {'':52}{'pages read':>12}  target")
    print(f"  {'without a crash':52}{clean['reads']:>12}")
    print(f"  {'resume from the progress item (dynamodb.query)':52}{saved['after_crash']:>12}  <= 41")
    print(f"  {'resume from the engine checkpoint only (every 10)':52}{engine_only['after_crash']:>12}")
    print(f"  {'start over (no checkpoint)':52}{PAGES:>12}")
    complete = saved["items"] == clean["items"] == PAGES * PAGE_SIZE
    print(f"  every item counted once after the resume: {complete} ({saved['items']:,} items)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
