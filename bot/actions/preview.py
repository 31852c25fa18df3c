"""What a step would do, without doing it: the plan's view of every action.

A plan (`/runbook plan`) runs the steps that only read for real, through a session that refuses
everything but reads (`PlanGuard`), and for every other step computes its exact effect and the
outputs it would produce, so that later steps, `when` conditions and checks see what the run
would see. Each outcome carries its mark in `figures["plan"]`:

- `run`: the step would run (a read ran for real; a wait, a note, a check as the run would see them)
- `approval`: the step changes something and needs an approval; `figures["effect"]` says what
- `skip`: a risky step with nothing to change (the run skips it, as it would)
- `end`: a `succeed` step: the run would end here
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.actions.base import Action, ActionContext, Effect, StepOutcome, planned_effect
from bot.actions.dynamodb import capacity_of, describe_table
from bot.exceptions import ActionError

PLAN = "plan"  # the figures key holding a step's mark
RUN, APPROVAL, SKIP, END = "run", "approval", "skip", "end"
CHECK_IN_PLACE_LIMIT = 5_000  # missed writes checked one by one against the table; beyond, counted only
BATCH = 100  # BatchGetItem's limit

# Actions that only read: a plan runs them for real (the guard refuses anything else they try).
READS = frozenset(
    {
        "check",
        "fail",
        "succeed",
        "preflight",
        "dynamodb.describe",
        "dynamodb.query",
        "dynamodb.consistency_check",
        "cloudwatch.metrics",
    }
)


def preview(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
    """The step as a plan sees it: run for real if it only reads, else its exact effect and the
    outputs it would give. Raises ActionError where the run would fail at this step."""
    if action.name in READS:
        return _ran(action, action.run(ctx, inputs))
    previewer = _PREVIEWS.get(action.name)
    if previewer is not None:
        return previewer(action, ctx, inputs)
    effect = planned_effect(action, ctx, inputs)
    mark = APPROVAL if action.always_high_risk else RUN
    return _outcome(
        mark, f"would run {action.name}: {effect.text} (its outputs cannot be predicted)", {}, effect
    )


def _ran(action: Action, outcome: StepOutcome) -> StepOutcome:
    """A read that ran for real, marked; a paged read that handed back is left as it is."""
    if outcome.status != "succeeded":
        return outcome  # the plan reads on with the next record, as the run would
    mark = END if action.name == "succeed" else RUN
    summary = f"the run would end here: {outcome.summary}" if mark == END else outcome.summary
    return StepOutcome("succeeded", outcome.outputs, summary, {**outcome.figures, PLAN: mark})


def _outcome(mark: str, summary: str, outputs: dict[str, Any], effect: Effect | None = None) -> StepOutcome:
    figures: dict[str, Any] = {PLAN: mark}
    if effect is not None:
        figures["effect"] = effect.text
        figures["fingerprint"] = effect.fingerprint
        figures["risk"] = effect.risk  # high | critical: how many approvers the run will need
    return StepOutcome("succeeded", outputs, summary, figures)


def _risky(effect: Effect, outputs: dict[str, Any], summary: str = "") -> StepOutcome:
    """A step that changes something: `approval` with its effect, or `skip` when nothing changes."""
    if not effect.changes:
        return _outcome(SKIP, f"nothing to change ({effect.reason or effect.text})", outputs, effect)
    return _outcome(APPROVAL, summary or effect.text, outputs, effect)


def _wait(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
    seconds = float(inputs["seconds"])
    if not 0 <= seconds <= 86_400:
        raise ActionError("InvalidInput", f"wait takes 0 to 86400 seconds, got {seconds:g}")
    reason = f" ({inputs['reason']})" if inputs.get("reason") else ""
    return _outcome(
        RUN, f"would wait {seconds:g}s{reason}; a plan does not wait", {"waited_seconds": seconds}
    )


def _notify(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
    text = str(inputs["text"])[:2000]
    return _outcome(RUN, f"would post: {text}", {"text": text})


def _approval_gate(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
    effect = Effect(str(inputs["effect"]), fingerprint=action.name)
    return _outcome(APPROVAL, effect.text, {"approved": True}, effect)


def _set_capacity(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
    name = inputs["table"]
    table = describe_table(ctx, name)
    mode, read, write = capacity_of(table)
    current = {"billing_mode": mode, "read_units": read, "write_units": write}
    # The run's own target: a partner limit it exceeds fails the run at this step, after approval.
    target = action._target(ctx, inputs, table)  # type: ignore[attr-defined]
    effect = planned_effect(action, ctx, inputs)
    outputs = {"previous": current, "current": target, "changed": effect.changes}
    if not effect.changes:
        outputs["current"] = current
    return _risky(effect, outputs)


def _replay(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
    store = ctx.partner.failed_requests
    if store is None:
        raise ActionError(
            "InvalidInput",
            f"{ctx.partner.name} has no failed_requests store in its partner file",
            retryable=False,
        )
    budget = float(action.budget(ctx, inputs))  # type: ignore[attr-defined]
    effect = planned_effect(action, ctx, inputs)
    if store.kind == "sqs":
        count = _queue_count(ctx, store.name)
        pending, in_place, how = count, 0, "approximate"
        note = (
            f"about {count:,} missed writes in {store.name} (approximate: SQS's GetQueueAttributes; a plan "
            "never receives messages, so it cannot tell how many are already in place)"
        )
    else:
        count, in_place, checked = _table_store_in_place(ctx, store.name, inputs)
        pending, how = count - in_place, "exact" if checked == count else "partial"
        note = f"{count:,} missed writes in {store.name}: {pending:,} to write, {in_place:,} already in place"
        if checked < count:
            note += f" (of the first {checked:,}, checked one by one; the rest counted only)"
    seconds = count / budget if budget else 0.0
    outputs = {
        "applied": pending,
        "skipped_duplicates": in_place,
        "failed": 0,
        "throttled": 0,
        "budget_wcu": round(budget, 1),
        "items_per_second": round(budget, 1),
    }
    summary = (
        f"{note}; budget ≤ {budget:,.0f} writes/s into {inputs['table']}, about {_duration(seconds)}; each "
        "write is conditional on its version, so writes already there are skipped, never doubled"
    )
    outcome = _risky(effect, outputs, summary)
    outcome.figures.update({"missed_writes": count, "to_write": pending, "in_place": in_place, "count": how})
    outcome.figures["estimated_seconds"] = round(seconds, 1)
    return outcome


def _hot_keys(action: Action, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
    store = ctx.partner.failed_requests
    if store is None or store.kind != "sqs":
        return _ran(action, action.run(ctx, inputs))  # samples a table store: reads only
    insights = action._from_contributor_insights(  # type: ignore[attr-defined]
        ctx, inputs["table"], int(inputs.get("top", 5)), int(inputs.get("window_seconds", 900))
    )
    if insights is not None:
        return _ran(action, action.run(ctx, inputs))  # Contributor Insights: reads only
    count = _queue_count(ctx, store.name)
    source = "not sampled: a plan never receives SQS messages"
    return _outcome(
        RUN,
        f"about {count:,} missed writes in {store.name} (approximate: GetQueueAttributes); the run would "
        "sample them for hot keys, a plan cannot without hiding them from the queue",
        {"top": [], "sampled": count, "hottest_share": 0.0, "source": source},
    )


def _queue_count(ctx: ActionContext, queue: str) -> int:
    sqs = ctx.aws.client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs.get("ApproximateNumberOfMessages", 0)) + int(
        attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def _table_store_in_place(ctx: ActionContext, store: str, inputs: dict[str, Any]) -> tuple[int, int, int]:
    """(missed writes, already in place, checked): each of the first CHECK_IN_PLACE_LIMIT missed
    writes read against the target table, as the replay's condition would judge it."""
    client = ctx.aws.client("dynamodb")
    table = describe_table(ctx, inputs["table"])
    key_names = [k["AttributeName"] for k in table["KeySchema"]]
    version_attr = inputs.get("version_attribute", "version")
    records: list[tuple[dict[str, Any], int]] = []
    count, cursor = 0, None
    while True:
        page = client.scan(TableName=store, **({"ExclusiveStartKey": cursor} if cursor else {}))
        for row in page.get("Items", []):
            count += 1
            if len(records) < CHECK_IN_PLACE_LIMIT and "item" in row and "version" in row:
                records.append((row["item"]["M"], int(row["version"]["N"])))
        cursor = page.get("LastEvaluatedKey")
        if not cursor:
            break
    found = _read_keys(client, inputs["table"], key_names, [item for item, _ in records])
    in_place = 0
    for item, version in records:
        key = _key_of(item, key_names)
        existing = found.get(key) if key else None
        # The replay writes when the item is missing or older: in place means present and not older.
        if existing is not None and int((existing.get(version_attr) or {}).get("N", "-1")) >= version:
            in_place += 1
    return count, in_place, len(records)


def _key_of(item: dict[str, Any], key_names: list[str]) -> str | None:
    if not all(k in item for k in key_names):
        return None
    import json

    return json.dumps({k: item[k] for k in key_names}, sort_keys=True)


def _read_keys(
    client: Any, table: str, key_names: list[str], items: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The target table's items at these keys (BatchGetItem, 100 distinct keys a call)."""
    import json

    wanted = sorted({k for k in (_key_of(i, key_names) for i in items) if k})
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), BATCH):
        request = {
            table: {"Keys": [json.loads(k) for k in wanted[start : start + BATCH]], "ConsistentRead": True}
        }
        for _ in range(8):
            answer = client.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table, []):
                key = _key_of(item, key_names)
                if key:
                    found[key] = item
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise ActionError(
                "ProvisionedThroughputExceededException",
                f"{table} kept some keys unprocessed; the plan could not count what is in place",
            )
    return found


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 0.1):.0f}s" if seconds >= 1 else "under a second"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


_PREVIEWS: dict[str, Callable[[Action, ActionContext, dict[str, Any]], StepOutcome]] = {
    "wait": _wait,
    "notify": _notify,
    "approval": _approval_gate,
    "dynamodb.set_capacity": _set_capacity,
    "dynamodb.replay": _replay,
    "dynamodb.hot_keys": _hot_keys,
}
