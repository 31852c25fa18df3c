"""DynamoDB actions on the partner's tables: describe, query, consistency, capacity, preflight."""

from __future__ import annotations

from typing import Any

from bot.actions.base import ActionContext, Effect, StepOutcome, register
from bot.exceptions import ActionError
from bot.store.codec import from_attribute, to_attribute

TABLE = {"type": "string", "minLength": 3, "description": "table name, e.g. {{ partner.tables.orders.name }}"}


def plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_attribute(v) for k, v in item.items()}


def attr(value: Any) -> dict[str, Any]:
    return to_attribute(value)


def describe_table(ctx: ActionContext, table: str) -> dict[str, Any]:
    try:
        return dict(ctx.aws.client("dynamodb").describe_table(TableName=table)["Table"])
    except Exception as error:
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise ActionError(
                code,
                f"table {table} does not exist in {ctx.partner.region}; check the partner file's "
                "tables and region",
            ) from None
        raise


def capacity_of(table: dict[str, Any]) -> tuple[str, int, int]:
    mode = (table.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED")
    throughput = table.get("ProvisionedThroughput") or {}
    return mode, int(throughput.get("ReadCapacityUnits") or 0), int(throughput.get("WriteCapacityUnits") or 0)


class Describe:
    name = "dynamodb.describe"
    outputs: tuple[str, ...] = (
        "status",
        "billing_mode",
        "read_units",
        "write_units",
        "item_count",
        "size_bytes",
        "stream_enabled",
        "pitr_enabled",
        "indexes",
    )
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["table"],
        "additionalProperties": False,
        "properties": {"table": TABLE},
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        table = describe_table(ctx, inputs["table"])
        mode, read, write = capacity_of(table)
        try:
            backups = ctx.aws.client("dynamodb").describe_continuous_backups(TableName=inputs["table"])
            pitr = (
                backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
                    "PointInTimeRecoveryStatus"
                ]
                == "ENABLED"
            )
        except Exception:  # PITR is informative only; a denied or missing call must not fail the step
            pitr = False
        indexes = [
            {"name": i["IndexName"], "status": i.get("IndexStatus", "ACTIVE")}
            for i in table.get("GlobalSecondaryIndexes") or []
        ]
        outputs = {
            "status": table["TableStatus"],
            "billing_mode": mode,
            "read_units": read,
            "write_units": write,
            "item_count": int(table.get("ItemCount") or 0),
            "size_bytes": int(table.get("TableSizeBytes") or 0),
            "stream_enabled": bool((table.get("StreamSpecification") or {}).get("StreamEnabled")),
            "pitr_enabled": pitr,
            "indexes": indexes,
        }
        capacity = "on-demand" if mode == "PAY_PER_REQUEST" else f"{read} RCU / {write} WCU provisioned"
        return StepOutcome.done(
            f"{inputs['table']} is {table['TableStatus']}, {capacity}, {len(indexes)} GSI(s)",
            outputs,
            billing=capacity,
            items=outputs["item_count"],
        )

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return f"reads the description of {inputs.get('table')}; changes nothing"


class Query:
    """The runbook's query structure reference, fully paginated, checkpointed every N pages."""

    name = "dynamodb.query"
    resumable = True
    outputs: tuple[str, ...] = (
        "pages",
        "items_returned",
        "items_scanned",
        "truncated_pages",
        "filter_efficiency",
        "complete",
        "verdict",
    )
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["table", "key_condition"],
        "additionalProperties": False,
        "properties": {
            "table": TABLE,
            "index": {"type": "string"},
            "key_condition": {"type": "string", "description": "KeyConditionExpression, e.g. pk = :pk"},
            "values": {"type": "object", "description": "plain values for :placeholders"},
            "names": {"type": "object"},
            "filter": {"type": "string"},
            "projection": {"type": "string"},
            "consistent_read": {"type": "boolean"},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 1000},
            "max_pages": {"type": "integer", "minimum": 1, "maximum": 100000},
            "checkpoint_every_pages": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        client = ctx.aws.client("dynamodb")
        state = dict(ctx.checkpoint or {"pages": 0, "returned": 0, "scanned": 0, "truncated": 0, "key": None})
        request: dict[str, Any] = {
            "TableName": inputs["table"],
            "KeyConditionExpression": inputs["key_condition"],
            "ConsistentRead": bool(inputs.get("consistent_read", False)),
        }
        if inputs.get("values"):
            request["ExpressionAttributeValues"] = {k: attr(v) for k, v in inputs["values"].items()}
        for key, name in (
            ("index", "IndexName"),
            ("filter", "FilterExpression"),
            ("projection", "ProjectionExpression"),
            ("names", "ExpressionAttributeNames"),
            ("page_size", "Limit"),
        ):
            if inputs.get(key):
                request[name] = inputs[key]
        every = int(inputs.get("checkpoint_every_pages", 10))
        max_pages = int(inputs.get("max_pages", 10000))
        read_now = 0
        while True:
            if state["key"]:
                request["ExclusiveStartKey"] = state["key"]
            page = client.query(**request)
            read_now += 1
            state["pages"] += 1
            state["returned"] += int(page.get("Count", 0))
            state["scanned"] += int(page.get("ScannedCount", 0))
            state["key"] = page.get("LastEvaluatedKey")
            if state["key"] and "Limit" not in request:
                state["truncated"] += 1  # stopped by the 1 MB page limit, not by our Limit
            if not state["key"] or state["pages"] >= max_pages:
                break
            ctx.save_progress(state)
            if read_now >= every or ctx.should_checkpoint():
                return StepOutcome.resume_later(state, f"{state['pages']} pages read so far")
        return self._finish(inputs, state)

    def _finish(self, inputs: dict[str, Any], state: dict[str, Any]) -> StepOutcome:
        scanned = max(1, state["scanned"])
        efficiency = round(state["returned"] / scanned, 3)
        complete = state["key"] is None
        notes = []
        if not complete:
            notes.append(f"stopped at max_pages={inputs.get('max_pages')}: results are INCOMPLETE")
        if state["truncated"]:
            notes.append(f"{state['truncated']} page(s) cut by the 1 MB limit")
        if inputs.get("filter") and efficiency < 0.2:
            notes.append(
                f"the filter kept {efficiency:.0%} of what was read: move it into the key condition or a GSI"
            )
        verdict = "; ".join(notes) or "complete; every page read"
        outputs = {
            "pages": state["pages"],
            "items_returned": state["returned"],
            "items_scanned": state["scanned"],
            "truncated_pages": state["truncated"],
            "filter_efficiency": efficiency,
            "complete": complete,
            "verdict": verdict,
        }
        return StepOutcome.done(
            f"query on {inputs['table']}: {state['returned']:,} items in {state['pages']} pages; {verdict}",
            outputs,
            pages=state["pages"],
            returned=state["returned"],
            scanned=state["scanned"],
        )

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return f"reads {inputs.get('table')} page by page; changes nothing"


class ConsistencyCheck:
    """The same keys read eventually and strongly consistent, and through a GSI vs the base table."""

    name = "dynamodb.consistency_check"
    outputs: tuple[str, ...] = ("checked", "mismatches", "gsi_missing", "verdict")
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["table"],
        "additionalProperties": False,
        "properties": {
            "table": TABLE,
            "sample": {"type": "integer", "minimum": 1, "maximum": 1000},
            "index": {"type": "string"},
            "index_key": {"type": "string"},
        },
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        client = ctx.aws.client("dynamodb")
        table = describe_table(ctx, inputs["table"])
        key_names = [k["AttributeName"] for k in table["KeySchema"]]
        items = client.scan(
            TableName=inputs["table"], Limit=int(inputs.get("sample", 50)), ConsistentRead=True
        )["Items"]
        mismatches, gsi_missing = 0, 0
        for item in items:
            key = {k: item[k] for k in key_names}
            eventual = client.get_item(TableName=inputs["table"], Key=key, ConsistentRead=False).get("Item")
            if eventual != item:
                mismatches += 1
            if inputs.get("index") and inputs.get("index_key") and inputs["index_key"] in item:
                found = client.query(
                    TableName=inputs["table"],
                    IndexName=inputs["index"],
                    KeyConditionExpression="#k = :v",
                    ExpressionAttributeNames={"#k": inputs["index_key"]},
                    ExpressionAttributeValues={":v": item[inputs["index_key"]]},
                )["Items"]
                if not any(all(f.get(k) == key[k] for k in key_names) for f in found):
                    gsi_missing += 1
        verdict = (
            "consistent"
            if not (mismatches or gsi_missing)
            else f"{mismatches} stale eventual read(s), {gsi_missing} item(s) not yet in the GSI"
        )
        outputs = {
            "checked": len(items),
            "mismatches": mismatches,
            "gsi_missing": gsi_missing,
            "verdict": verdict,
        }
        return StepOutcome.done(
            f"{len(items)} keys checked on {inputs['table']}: {verdict}",
            outputs,
            checked=len(items),
            mismatches=mismatches,
            gsi_missing=gsi_missing,
        )

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return f"reads sample keys of {inputs.get('table')} twice; changes nothing"


LARGE_TABLE_BYTES = 100 * 1024**3  # a table this size, switched to on-demand, is a critical change
LARGE_SHARE_OF_CEILING = 0.5  # ... as is one provisioned at this share of the partner's ceiling


def capacity_risk(
    table: dict[str, Any], current: dict[str, Any], target: dict[str, Any], limits: Any, *, restore: bool
) -> str:
    """`critical` for a switch of a large provisioned table to on-demand, else `high`.

    On-demand has no ceiling: the partner's `capacity` limits stop holding and the bill follows
    the traffic, and DynamoDB lets a table switch to on-demand only a few times a day, so the
    change is hard to take back quickly. "Large" is a table that stores LARGE_TABLE_BYTES or more,
    or is provisioned at LARGE_SHARE_OF_CEILING or more of the partner's max_read_units or
    max_write_units. A rollback (`restore`) returns to the setting the table had before the run:
    never critical.
    """
    if restore or target["billing_mode"] != "PAY_PER_REQUEST" or current["billing_mode"] == "PAY_PER_REQUEST":
        return "high"
    size = int(table.get("TableSizeBytes") or 0)
    near_ceiling = any(
        ceiling and units >= LARGE_SHARE_OF_CEILING * ceiling
        for units, ceiling in (
            (current["read_units"], limits.max_read_units),
            (current["write_units"], limits.max_write_units),
        )
    )
    return "critical" if size >= LARGE_TABLE_BYTES or near_ceiling else "high"


class SetCapacity:
    """On-demand, or more provisioned capacity within the partner's limits; prior setting kept."""

    name = "dynamodb.set_capacity"
    outputs: tuple[str, ...] = ("previous", "current", "changed")
    always_high_risk = True
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "required": ["table"],
        "additionalProperties": False,
        "properties": {
            "table": TABLE,
            "mode": {"enum": ["on-demand", "provisioned"]},
            "read_units": {"type": "integer", "minimum": 1},
            "write_units": {"type": "integer", "minimum": 1},
            "restore": {"type": ["object", "null"], "description": "a `previous` output to roll back to"},
        },
    }

    def _target(self, ctx: ActionContext, inputs: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
        if inputs.get("restore"):
            return dict(inputs["restore"])
        limits = ctx.partner.capacity
        _, read, write = capacity_of(table)
        if inputs.get("mode", "on-demand") == "on-demand":
            if not limits.allow_on_demand:
                raise ActionError(
                    "CapacityLimitExceeded",
                    f"{ctx.partner.name} does not allow on-demand "
                    "(capacity.allow_on_demand is false); ask for provisioned units instead",
                    retryable=False,
                )
            return {"billing_mode": "PAY_PER_REQUEST", "read_units": 0, "write_units": 0}
        want_r, want_w = int(inputs.get("read_units") or read), int(inputs.get("write_units") or write)
        if (limits.max_read_units and want_r > limits.max_read_units) or (
            limits.max_write_units and want_w > limits.max_write_units
        ):
            raise ActionError(
                "CapacityLimitExceeded",
                f"{want_r} RCU / {want_w} WCU exceeds {ctx.partner.name}'s "
                f"limits ({limits.max_read_units} RCU / {limits.max_write_units} WCU)",
                retryable=False,
            )
        return {"billing_mode": "PROVISIONED", "read_units": want_r, "write_units": want_w}

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        name = inputs["table"]
        table = describe_table(ctx, name)
        mode, read, write = capacity_of(table)
        previous = {"billing_mode": mode, "read_units": read, "write_units": write}
        if ctx.checkpoint and ctx.checkpoint.get("previous"):
            previous = ctx.checkpoint["previous"]  # a resumed attempt keeps the setting from before it
        target = self._target(ctx, inputs, table)
        if table["TableStatus"] == "UPDATING":
            return StepOutcome.resume_later(
                {"previous": previous}, f"{name} is updating; waiting", due_in_seconds=5
            )
        current = {"billing_mode": mode, "read_units": read, "write_units": write}
        if _same(current, target):
            return StepOutcome.done(
                f"{name} already {_show(target)}",
                {"previous": previous, "current": current, "changed": False},
            )
        request: dict[str, Any] = {"TableName": name, "BillingMode": target["billing_mode"]}
        if target["billing_mode"] == "PROVISIONED":
            request["ProvisionedThroughput"] = {
                "ReadCapacityUnits": target["read_units"],
                "WriteCapacityUnits": target["write_units"],
            }
        ctx.aws.client("dynamodb").update_table(**request)
        return StepOutcome.done(
            f"{name}: {_show(current)} → {_show(target)}",
            {"previous": previous, "current": target, "changed": True},
            before=_show(current),
            after=_show(target),
        )

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return self.effect(ctx, inputs).text

    def effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> Effect:
        name = inputs["table"]
        table = describe_table(ctx, name)
        mode, read, write = capacity_of(table)
        current = {"billing_mode": mode, "read_units": read, "write_units": write}
        try:
            target = self._target(ctx, inputs, table)
        except ActionError as error:
            return Effect(f"cannot change {name}: {error}", fingerprint=f"{name}:{_show(current)}:refused")
        fingerprint = f"{name}:{_show(current)}->{_show(target)}"
        if _same(current, target):
            return Effect(
                f"{name} is already {_show(target)}", fingerprint, False, f"{name} is already {_show(target)}"
            )
        risk = capacity_risk(
            table, current, target, ctx.partner.capacity, restore=bool(inputs.get("restore"))
        )
        large = (
            " (critical: a large table leaves the partner's capacity ceiling for on-demand)"
            if risk == "critical"
            else ""
        )
        return Effect(
            f"changes {name} from {_show(current)} to {_show(target)}{large}; the prior setting is "
            "kept so on_failure can roll back",
            fingerprint,
            risk=risk,
        )


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["billing_mode"] != b["billing_mode"]:
        return False
    return a["billing_mode"] == "PAY_PER_REQUEST" or (a["read_units"], a["write_units"]) == (
        b["read_units"],
        b["write_units"],
    )


def _show(c: dict[str, Any]) -> str:
    return (
        "on-demand"
        if c["billing_mode"] == "PAY_PER_REQUEST"
        else f"{c['read_units']} RCU / {c['write_units']} WCU"
    )


class Preflight:
    """The pre-run checklist: targeting, tables, key coverage, replay headroom. Fails before anything risky."""

    name = "preflight"
    outputs: tuple[str, ...] = ("checks", "passed", "missed_writes")
    always_high_risk = False
    inputs_schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "tables": {"type": "array", "items": {"type": "string"}},
            "key_attributes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "attributes the planned queries use in key conditions",
            },
            "planned_replay": {"type": "boolean"},
        },
    }

    def run(self, ctx: ActionContext, inputs: dict[str, Any]) -> StepOutcome:
        checks: list[tuple[str, bool, str]] = []
        partner = ctx.partner
        if partner.role_arn:
            account = ctx.aws.client("sts").get_caller_identity()["Account"]
            checks.append(
                (
                    "account",
                    account == partner.account_id,
                    f"acting in {account}, partner is {partner.account_id}",
                )
            )
        else:
            checks.append(("account", True, "no role to assume: the bot's own account (demo/local)"))
        region = ctx.aws.client("dynamodb").meta.region_name
        checks.append(
            ("region", region == partner.region, f"clients in {region}, partner in {partner.region}")
        )
        aliases = inputs.get("tables") or list(partner.tables)
        for alias in aliases:
            table = partner.tables.get(alias)
            if table is None:
                checks.append((f"table {alias}", False, "not in the partner file"))
                continue
            name = table.name  # a drill's partner view names the drill target
            try:
                described = describe_table(ctx, name)
                checks.append(
                    (f"table {name}", described["TableStatus"] == "ACTIVE", described["TableStatus"])
                )
            except ActionError as error:
                checks.append((f"table {name}", False, str(error)))
        keys = {t.partition_key.name for t in partner.tables.values()} | {
            i.partition_key.name for t in partner.tables.values() for i in t.indexes
        }
        for attribute in inputs.get("key_attributes") or []:
            checks.append(
                (
                    f"key {attribute}",
                    attribute in keys,
                    "a partition key"
                    if attribute in keys
                    else "not a partition key of any table or GSI: the query would need a scan",
                )
            )
        missed = 0
        if inputs.get("planned_replay") and partner.failed_requests:
            missed = _count_missed(ctx)
            checks.append(
                ("replay store", True, f"{missed} missed write(s) in {partner.failed_requests.name}")
            )
        failed = [c for c in checks if not c[1]]
        summary = "; ".join(f"{'✔' if ok else '✘'} {name}: {detail}" for name, ok, detail in checks)
        if failed:
            raise ActionError("PreflightFailed", f"pre-run checklist failed: {summary}", retryable=False)
        return StepOutcome.done(
            f"pre-run checklist passed ({len(checks)} checks)",
            {"checks": [list(c) for c in checks], "passed": True, "missed_writes": missed},
            checks=len(checks),
            missed_writes=missed,
        )

    def describe_effect(self, ctx: ActionContext, inputs: dict[str, Any]) -> str:
        return "reads table descriptions and identity; changes nothing"


def _count_missed(ctx: ActionContext) -> int:
    store = ctx.partner.failed_requests
    assert store is not None
    if store.kind == "sqs":
        sqs = ctx.aws.client("sqs")
        url = sqs.get_queue_url(QueueName=store.name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])
    count, key = 0, None
    client = ctx.aws.client("dynamodb")
    while True:
        page = client.scan(
            TableName=store.name, Select="COUNT", **({"ExclusiveStartKey": key} if key else {})
        )
        count += int(page["Count"])
        key = page.get("LastEvaluatedKey")
        if not key:
            return count


DESCRIBE = register(Describe())
QUERY = register(Query())
CONSISTENCY = register(ConsistencyCheck())
SET_CAPACITY = register(SetCapacity())
PREFLIGHT = register(Preflight())
