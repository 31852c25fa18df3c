"""The executions table: conditional writes and queries. The only module that talks to it."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bot.exceptions import ClaimHeld, ConfigError, LockHeld, RunExpired, TransitionConflict
from bot.store import keys
from bot.store.client import TableClient
from bot.store.codec import from_attribute, from_item, size_of, to_attribute, to_item, to_plain
from bot.store.model import EventKind, Execution, Status, StepRecord

# A waiting timeline is nudged again if its publisher has not acted on the last nudge: after 10 s,
# then twice as long each time, at most 5 minutes apart. A publisher that lags (a busy stream) is
# not sent a record every 10 s while it works through the ones it has; its next write resets this.
NUDGE_AGAIN_MS = 10_000
NUDGE_AGAIN_MAX_MS = 300_000
MOVE_LEASE_MS = 15_000  # a claim for a transition that runs no step (sweeper, click, worker move)
SPILL_BYTES = 8_192  # step outputs larger than this live in their own item, not the state item
_CONDITION_FAILED = "ConditionalCheckFailedException"
SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")  # a person's Slack user id (alarms start runs as `alarm:<name>`)


def dynamodb_client() -> Any:
    """A new low-level client (a function's services hold one per sandbox). Standard retry mode rides out throttling of our own table."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": int(os.environ.get("BOT_DYNAMODB_MAX_ATTEMPTS", "8"))},
        connect_timeout=2,
        read_timeout=5,
        tcp_keepalive=True,
    )
    return boto3.client("dynamodb", config=config)


class ExecutionStore:
    """The executions table. Every method either returns its outcome or raises one of the
    exceptions its docstring names; anything else is DynamoDB failing (retried by the client)."""

    def __init__(self, client: TableClient | None = None, table: str | None = None) -> None:
        self.client = client or dynamodb_client()
        self.table = table or executions_table()

    # -- the state item --------------------------------------------------------------------

    def create(self, ex: Execution) -> bool:
        """Write a new execution (and its requester's history entry, in one transaction when there
        is one); False if one with this id exists (a redelivered request)."""
        entry = self._requester_entry(ex)
        if entry is None:
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=to_item(ex),
                    ConditionExpression="attribute_not_exists(#pk)",
                    ExpressionAttributeNames={"#pk": keys.PK},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                return False
            return True
        try:
            self.client.transact_write_items(TransactItems=[self._state_put(ex), entry])
        except self.client.exceptions.TransactionCanceledException:
            if self.get(ex.execution_id) is not None:
                return False
            raise
        return True

    def _state_put(self, ex: Execution) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table,
                "Item": to_item(ex),
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": keys.PK},
            }
        }

    def _requester_entry(self, ex: Execution) -> dict[str, Any] | None:
        """The run's item in its requester's history partition (history-index), for a person only:
        alarm-started runs have no requester to list them for. It lives under the run's own key,
        so it goes when the run's items are purged."""
        if not SLACK_USER.fullmatch(ex.requested_by):
            return None
        item = {
            **_key(keys.requester_key(ex.execution_id)),
            keys.HISTORY_PK: {"S": keys.requester_history(ex.requested_by)},
            keys.HISTORY_AT: {"N": str(ex.created_at_ms)},
            "execution_id": {"S": ex.execution_id},
            "partner": {"S": ex.partner},
            "runbook": {"S": ex.runbook},
        }
        return {"Put": {"TableName": self.table, "Item": item}}

    def create_locked(self, ex: Execution, locks: list[dict[str, str]], *, force: bool = False) -> str | None:
        """Create `ex` holding `locks` (keys from `keys`), unless an active run holds one of them.

        Returns None when created, else the id of the active run that holds a lock: `ex`'s own
        id when a redelivered request created it already. A lock whose run has ended is taken over in the same
        transaction (on condition that it is still ended: a retry may reopen it meanwhile); with
        `force`, so is an active run's (the caller states that on the timeline).
        """
        if not locks:
            return None if self.create(ex) else ex.execution_id
        puts: list[dict[str, Any]] = []
        ended: dict[str, Execution] = {}
        for lock in locks:
            current = self.client.get_item(TableName=self.table, Key=_key(lock), ConsistentRead=True).get(
                "Item"
            )
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": keys.PK},
            }
            if current:
                held_by = current["execution_id"]["S"]
                if held_by == ex.execution_id:
                    return held_by  # a redelivered start: this run holds it already
                running = self.get(held_by)
                if running is not None and not running.status.terminal and not force:
                    return held_by
                if running is not None and running.status.terminal:
                    ended[held_by] = running
                condition = {
                    "ConditionExpression": "execution_id = :held",
                    "ExpressionAttributeValues": {":held": {"S": held_by}},
                }
            item = _key(lock) | {"execution_id": {"S": ex.execution_id}}
            puts.append({"Put": {"TableName": self.table, "Item": item, **condition}})
        entry = self._requester_entry(ex)
        try:
            self.client.transact_write_items(
                TransactItems=[
                    *puts,
                    *map(self._still_ended, ended.values()),
                    self._state_put(ex),
                    *([entry] if entry else []),
                ]
            )
        except self.client.exceptions.TransactionCanceledException:
            for lock in locks:  # someone took a lock between our read and write, or this is a redelivery
                again = self.client.get_item(TableName=self.table, Key=_key(lock), ConsistentRead=True)
                holder = (again.get("Item") or {}).get("execution_id", {}).get("S", "")
                if holder:
                    return holder
            return ex.execution_id if self.get(ex.execution_id) else None
        return None

    def lock_holder(self, lock: dict[str, str]) -> str | None:
        """The id of the active run holding `lock`, or None when it is free (or its run ended)."""
        item = self.client.get_item(TableName=self.table, Key=_key(lock), ConsistentRead=True).get("Item")
        if not item:
            return None
        held_by = str(item["execution_id"]["S"])
        running = self.get(held_by)
        return held_by if running is not None and not running.status.terminal else None

    def get(self, execution_id: str, *, consistent: bool = True) -> Execution | None:
        """The run's state item (consistent read unless asked otherwise), or None when it does
        not exist or has expired."""
        item = self.client.get_item(
            TableName=self.table, Key=_key(keys.state_key(execution_id)), ConsistentRead=consistent
        ).get("Item")
        return from_item(item) if item else None

    def commit(self, execution_id: str, t: Any) -> None:
        """Write transition `t` (bot.engine.machine.Transition) if the item is still at its version.

        One UpdateItem: SET/REMOVE of the changed fields, the new step records, the new timeline
        events appended, `version` +1. Raises TransitionConflict if someone moved first.
        """
        try:
            self.client.update_item(**self._transition_update(execution_id, t))
        except self.client.exceptions.ConditionalCheckFailedException:
            raise TransitionConflict(
                f"execution {execution_id} moved past version {t.from_version} before this write"
            ) from None

    def _transition_update(self, execution_id: str, t: Any) -> dict[str, Any]:
        """The UpdateItem request that writes `t` conditionally on its version (and status)."""
        names: dict[str, str] = {"#status": "status", "#version": "version", "#updated": "updated_at_ms"}
        values: dict[str, Any] = {
            ":status": {"S": t.status.value},
            ":to": {"N": str(t.to_version)},
            ":from": {"N": str(t.from_version)},
            ":now": {"N": str(t.at_ms)},
        }
        sets = ["#status = :status", "#version = :to", "#updated = :now"]
        removes: list[str] = []
        for i, (field, value) in enumerate(t.set.items()):
            names[f"#f{i}"] = field
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":f{i}"] = to_attribute(to_plain(value))
                sets.append(f"#f{i} = :f{i}")
        if "due_at_ms" in t.set:
            names["#due_bucket"] = keys.DUE_BUCKET
            if t.set["due_at_ms"] is None:
                removes.append("#due_bucket")
            else:
                values[":due_bucket"] = {"S": keys.due_bucket(execution_id)}
                sets.append("#due_bucket = :due_bucket")
        if t.steps:
            names["#steps"] = "steps"
            for i, given in enumerate(t.steps):
                record = self._spill_if_large(execution_id, given)
                names[f"#s{i}"] = record.step_id
                values[f":s{i}"] = to_attribute(to_plain(record))
                sets.append(f"#steps.#s{i} = :s{i}")
        if t.events:
            names["#timeline"] = "timeline"
            values[":events"] = to_attribute(to_plain(list(t.events)))
            values[":empty"] = {"L": []}
            sets.append("#timeline = list_append(if_not_exists(#timeline, :empty), :events)")
        adds: list[str] = []
        granted = sorted({e.actor for e in t.events if e.kind is EventKind.APPROVAL_GRANTED and e.actor})
        if granted:  # who approved, kept where the history-index projects it
            names["#approved_by"] = keys.APPROVED_BY
            values[":approved_by"] = {"SS": granted}
            adds.append("#approved_by :approved_by")
        condition = "#version = :from"
        if t.expect_status:
            allowed = sorted(s.value for s in t.expect_status)
            for i, status in enumerate(allowed):
                values[f":ok{i}"] = {"S": status}
            condition += f" AND #status IN ({', '.join(f':ok{i}' for i in range(len(allowed)))})"
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        if adds:
            expression += " ADD " + ", ".join(adds)
        return {
            "TableName": self.table,
            "Key": _key(keys.state_key(execution_id)),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def reopen(
        self,
        ex: Execution,
        t: Any,
        locks: list[dict[str, str]],
        owner: str,
        now_ms: int,
        *,
        fresh_step: str = "",
    ) -> None:
        """Resume the ended run `ex` with `t` (bot.engine.machine.resume), under the claim rule.

        Claims `t.from_version`, then one transaction: the state item moves (still at that
        version, still ended, its TTL not yet passed; `t` removes the TTL), the run takes its
        `locks` back (free, held by a run that has ended, or its own already), its spilled outputs
        are checked to be still there, and `fresh_step`'s saved progress goes (its re-run starts
        afresh). With none of those to write, one conditional UpdateItem instead. Raises ClaimHeld (another writer is moving it: someone resuming it too),
        TransitionConflict (it moved first), LockHeld (an active run holds a lock; `.holder`),
        RunExpired (its retention ran out). The claim is given back on every refusal.
        """
        execution_id = ex.execution_id
        if not self.claim(execution_id, t.from_version, owner, now_ms, MOVE_LEASE_MS):
            raise ClaimHeld(
                f"execution {execution_id} at version {t.from_version} is being moved by someone else"
            )
        try:
            self._reopen(ex, t, locks, now_ms, fresh_step)
        except (TransitionConflict, LockHeld, RunExpired):
            self.release(execution_id, t.from_version, owner)
            raise

    def _reopen(
        self, ex: Execution, t: Any, locks: list[dict[str, str]], now_ms: int, fresh_step: str
    ) -> None:
        execution_id = ex.execution_id
        items: list[dict[str, Any]] = []
        ended: dict[str, Execution] = {}
        for lock in locks:
            holder = self._lock_owner(lock)
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": keys.PK},
            }
            if holder and holder != execution_id:
                running = self.get(holder)
                if running is not None and not running.status.terminal:
                    raise LockHeld(holder)
                if running is not None:
                    ended[holder] = running
            if holder:
                condition = {
                    "ConditionExpression": "execution_id = :held",
                    "ExpressionAttributeValues": {":held": {"S": holder}},
                }
            item = _key(lock) | {"execution_id": {"S": execution_id}}
            items.append({"Put": {"TableName": self.table, "Item": item, **condition}})
        items += map(self._still_ended, ended.values())
        for record in ex.steps.values():
            if record.spilled:
                items.append(
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": _key(keys.output_key(execution_id, record.step_id)),
                            "ConditionExpression": "attribute_exists(#pk)",
                            "ExpressionAttributeNames": {"#pk": keys.PK},
                        }
                    }
                )
        if fresh_step and self.progress(execution_id, fresh_step) is not None:
            # Nobody writes it meanwhile: its step is not running while the run is ended.
            progress = _key(keys.progress_key(execution_id, fresh_step))
            items.append({"Delete": {"TableName": self.table, "Key": progress}})
        update = self._transition_update(execution_id, t)
        update["ExpressionAttributeNames"]["#ttl"] = keys.TTL_ATTRIBUTE
        update["ExpressionAttributeValues"][":now_s"] = {"N": str(now_ms // 1000)}
        update["ConditionExpression"] += " AND (attribute_not_exists(#ttl) OR #ttl > :now_s)"
        try:
            if items:
                self.client.transact_write_items(TransactItems=[*items, {"Update": update}])
            else:  # nothing to write with it: one conditional write, like every other transition
                self.client.update_item(**update)
        except (
            self.client.exceptions.TransactionCanceledException,
            self.client.exceptions.ConditionalCheckFailedException,
        ):
            self._why_not_reopened(ex, t, locks, now_ms)
            raise TransitionConflict(
                f"execution {execution_id} changed while it was being resumed; look at it again"
            ) from None

    def _why_not_reopened(self, ex: Execution, t: Any, locks: list[dict[str, str]], now_ms: int) -> None:
        """After a cancelled reopen transaction: raise what stopped it (read back, not guessed)."""
        current = self.get(ex.execution_id)
        if current is None or (current.expires_at is not None and current.expires_at <= now_ms // 1000):
            raise RunExpired(f"execution {ex.execution_id} has expired")
        if current.version != t.from_version or current.status not in (t.expect_status or {current.status}):
            raise TransitionConflict(
                f"execution {ex.execution_id} moved past version {t.from_version} before this write"
            )
        for lock in locks:
            holder = self.lock_holder(lock)
            if holder and holder != ex.execution_id:
                raise LockHeld(holder)
        for record in current.steps.values():
            if record.spilled and not self.client.get_item(
                TableName=self.table,
                Key=_key(keys.output_key(ex.execution_id, record.step_id)),
                ConsistentRead=True,
            ).get("Item"):
                raise RunExpired(f"the outputs of step {record.step_id} of {ex.execution_id} are gone")

    def _still_ended(self, run: Execution) -> dict[str, Any]:
        """A transaction's check that `run`, whose lock is being taken over, is still the ended run
        that was read: a retry reopening it meanwhile (a new version) cancels the takeover."""
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": _key(keys.state_key(run.execution_id)),
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":seen": {"N": str(run.version)}},
            }
        }

    def _lock_owner(self, lock: dict[str, str]) -> str:
        """The run a lock item names (active or not), or "" when there is none."""
        item = self.client.get_item(TableName=self.table, Key=_key(lock), ConsistentRead=True).get("Item")
        return str(item["execution_id"]["S"]) if item else ""

    def request_cancel(self, execution_id: str, by: str) -> Execution | None:
        """Mark an active run for cancellation at its next step boundary; None if it isn't active."""
        active = [s.value for s in Status if not s.terminal]
        try:
            result = self.client.update_item(
                TableName=self.table,
                Key=_key(keys.state_key(execution_id)),
                UpdateExpression="SET cancel_requested_by = :by",
                ConditionExpression=(
                    "attribute_exists(#pk) AND #status IN ("
                    + ", ".join(f":s{i}" for i in range(len(active)))
                    + ") AND (attribute_not_exists(cancel_requested_by) OR cancel_requested_by = :none)"
                ),
                ExpressionAttributeNames={"#pk": keys.PK, "#status": "status"},
                ExpressionAttributeValues={
                    ":by": {"S": by},
                    ":none": {"S": ""},
                    **{f":s{i}": {"S": s} for i, s in enumerate(active)},
                },
                ReturnValues="ALL_NEW",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return from_item(result["Attributes"])

    # -- claims: who may move a run from a version -------------------------------------------

    def claim(self, execution_id: str, version: int, owner: str, now_ms: int, lease_ms: int) -> bool:
        """Take the right to move the run from `version`; False while someone else's lease runs.

        The one rule for every writer of a transition (the worker running a step, the sweeper,
        an approval click): claim the version, then commit. Whoever holds a live claim is the
        only one that may move the run, so a step is never run by two workers at once and the
        sweeper never moves a run from under a working step.
        """
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    **_key(keys.claim_key(execution_id, version)),
                    "owner": {"S": owner},
                    "lease_until_ms": {"N": str(now_ms + lease_ms)},
                    keys.TTL_ATTRIBUTE: {"N": str(now_ms // 1000 + 86_400)},
                },
                ConditionExpression="attribute_not_exists(#pk) OR lease_until_ms < :now",
                ExpressionAttributeNames={"#pk": keys.PK},
                ExpressionAttributeValues={":now": {"N": str(now_ms)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def move(self, execution_id: str, t: Any, owner: str, now_ms: int, lease_ms: int = MOVE_LEASE_MS) -> None:
        """Claim `t.from_version`, then commit `t`: a transition that runs no step.

        Raises ClaimHeld while another writer (a worker mid-step) holds the version, and
        TransitionConflict if the run moved first; the claim is given back on a conflict.
        """
        if not self.claim(execution_id, t.from_version, owner, now_ms, lease_ms):
            raise ClaimHeld(
                f"execution {execution_id} at version {t.from_version} is being moved by another worker"
            )
        try:
            self.commit(execution_id, t)
        except TransitionConflict:
            self.release(execution_id, t.from_version, owner)
            raise

    def claim_lease(self, execution_id: str, version: int) -> int | None:
        """Until when the step at `version` is claimed (epoch ms), or None if no worker claimed it."""
        item = self.client.get_item(
            TableName=self.table, Key=_key(keys.claim_key(execution_id, version)), ConsistentRead=True
        ).get("Item")
        return int(item["lease_until_ms"]["N"]) if item else None

    def release(self, execution_id: str, version: int, owner: str) -> None:
        """Give a claim back after a failure we caught, so a retried record can take it at once."""
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.delete_item(
                TableName=self.table,
                Key=_key(keys.claim_key(execution_id, version)),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )

    # -- progress inside a step ----------------------------------------------------------------

    def save_progress(self, execution_id: str, step_id: str, state: dict[str, Any], now_ms: int) -> None:
        """Record how far a long step got (a page cursor); its own item, so no stream round trip."""
        self.client.put_item(
            TableName=self.table,
            Item={
                **_key(keys.progress_key(execution_id, step_id)),
                "state": to_attribute(to_plain(state)),
                "saved_at_ms": {"N": str(now_ms)},
                keys.TTL_ATTRIBUTE: {"N": str(now_ms // 1000 + 7 * 86_400)},
            },
        )

    def request_pause(self, execution_id: str, alarm: str, reason: str, now_ms: int) -> bool:
        """Ask a running run's guarded step to pause (the alarm handler): sets `pause_request` on
        the state item if the run is RUNNING or APPROVED and has none yet. The version and claims
        stay as they are: the worker running the step obeys at its next safe point. False when
        the run is not running (ended, waiting, gone) or a request is there already."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_key(keys.state_key(execution_id)),
                UpdateExpression="SET pause_request = :request",
                ConditionExpression=(
                    "attribute_exists(pk) AND #status IN (:running, :approved) "
                    "AND attribute_not_exists(pause_request)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":request": to_attribute({"alarm": alarm, "reason": reason, "at_ms": now_ms}),
                    ":running": {"S": Status.RUNNING.value},
                    ":approved": {"S": Status.APPROVED.value},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def pause_request(self, execution_id: str) -> dict[str, Any] | None:
        """The alarm handler's pause request on the run, if any (a consistent read of one attribute)."""
        item = self.client.get_item(
            TableName=self.table,
            Key=_key(keys.state_key(execution_id)),
            ConsistentRead=True,
            ProjectionExpression="pause_request",
        ).get("Item")
        request = from_attribute(item["pause_request"]) if item and "pause_request" in item else None
        return request if isinstance(request, dict) else None

    def lock_holders(self, locks: list[dict[str, str]]) -> list[str]:
        """The execution ids holding any of `locks`, each once (a lock outlives its run until a new
        run takes it over: callers check the run's status)."""
        holders: dict[str, None] = {}
        for lock in locks:
            item = self.client.get_item(TableName=self.table, Key=_key(lock), ConsistentRead=True).get("Item")
            if item and "execution_id" in item:
                holders[item["execution_id"]["S"]] = None
        return list(holders)

    def progress(self, execution_id: str, step_id: str) -> dict[str, Any] | None:
        """How far a long step got (what `save_progress` wrote), or None before its first page."""
        item = self.client.get_item(
            TableName=self.table, Key=_key(keys.progress_key(execution_id, step_id)), ConsistentRead=True
        ).get("Item")
        state = from_attribute(item["state"]) if item else None
        return state if isinstance(state, dict) else None

    # -- spilled outputs ---------------------------------------------------------------------

    def _spill_if_large(self, execution_id: str, record: StepRecord) -> StepRecord:
        if not record.outputs or size_of(record.outputs) <= SPILL_BYTES:
            return record
        self.client.put_item(
            TableName=self.table,
            Item={
                **_key(keys.output_key(execution_id, record.step_id)),
                "outputs": to_attribute(to_plain(record.outputs)),
            },
        )
        return StepRecord(**{**to_plain(record), "outputs": {}, "spilled": True})

    def outputs(self, execution_id: str, record: StepRecord) -> dict[str, Any]:
        """A step's outputs, from the state item or from their own item when spilled."""
        if not record.spilled:
            return record.outputs
        item = self.client.get_item(
            TableName=self.table, Key=_key(keys.output_key(execution_id, record.step_id)), ConsistentRead=True
        ).get("Item")
        return from_attribute(item["outputs"]) if item else {}

    def channel_unreachable(self, channel_id: str) -> str:
        """Why the bot could not post in `channel_id` lately (a Slack error code), or ""."""
        item = self.client.get_item(TableName=self.table, Key=_key(keys.channel_key(channel_id))).get("Item")
        return str(item["code"]["S"]) if item else ""

    # -- retention -------------------------------------------------------------------------

    def purge(self, execution_id: str, locks: list[dict[str, str]]) -> int:
        """Delete what a run left once its state item expired (TTL): outputs, progress, claims,
        the publisher's item, and the locks it still holds. Returns how many items went.

        Safe to repeat (a redelivered record deletes nothing more); a lock another run holds now
        is left alone (conditional delete)."""
        deleted = 0
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": keys.PK, "#sk": keys.SK},
            "ExpressionAttributeValues": {":pk": {"S": keys.execution_pk(execution_id)}},
            "ProjectionExpression": "#pk, #sk",
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**request)
            for item in page.get("Items", []):
                self.client.delete_item(TableName=self.table, Key=item)
                deleted += 1
            if not page.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        for lock in locks:
            try:
                self.client.delete_item(
                    TableName=self.table,
                    Key=_key(lock),
                    ConditionExpression="execution_id = :mine",
                    ExpressionAttributeValues={":mine": {"S": execution_id}},
                )
                deleted += 1
            except self.client.exceptions.ConditionalCheckFailedException:
                pass  # gone already, or another run holds it now
        return deleted

    # -- the sweeper's view ------------------------------------------------------------------

    def due(self, now_ms: int, limit: int = 100) -> Iterator[Due]:
        """What is due now, oldest first (the sparse due-index): runs whose `due_at_ms` has passed,
        publishers' items whose events wait for a nudge, and homes that waited for Slack.

        Each due-index shard is queried at once, in parallel; their answers are merged by due time.
        """
        from concurrent.futures import ThreadPoolExecutor

        def shard(bucket: str) -> list[tuple[int, str, str]]:
            found: list[tuple[int, str, str]] = []
            request: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": keys.DUE_INDEX,
                "KeyConditionExpression": "#bucket = :bucket AND #due <= :now",
                "ExpressionAttributeNames": {
                    "#bucket": keys.DUE_BUCKET,
                    "#due": keys.DUE_AT,
                    "#pk": keys.PK,
                    "#sk": keys.SK,
                },
                "ExpressionAttributeValues": {":bucket": {"S": bucket}, ":now": {"N": str(now_ms)}},
                "ProjectionExpression": "#pk, #sk, #due",
                "Limit": min(limit, 100),
            }
            while len(found) < limit:
                page = self.client.query(**request)
                found += [
                    (int(i[keys.DUE_AT]["N"]), i[keys.PK]["S"], i[keys.SK]["S"])
                    for i in page.get("Items", [])
                ]
                if not page.get("LastEvaluatedKey"):
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            return found

        buckets = keys.due_buckets()
        with ThreadPoolExecutor(max_workers=len(buckets), thread_name_prefix="due") as pool:
            merged = sorted(hit for hits in pool.map(shard, buckets) for hit in hits)
        for due_at_ms, pk, sk in merged[:limit]:
            if sk == keys.HOME_SK:
                yield Due("", "home", due_at_ms, user_id=keys.home_user_of(pk))
            else:
                yield Due(keys.execution_id_of(pk), "publish" if sk == keys.SLACK_SK else "run", due_at_ms)

    def nudge(self, execution_id: str, due_at_ms: int, now_ms: int) -> bool:
        """Wake the publisher of a run whose events wait (Slack paced it, or the channel could not
        be reached): a small write on the state item, hence a stream record, without moving the
        run. False if the run is gone or another sweeper nudged it first."""
        try:
            # The item stays in the due-index, a little later: if this nudge is lost (its record
            # fails, the publisher is paced again and loses a race), a later pass nudges again.
            # Only the publisher, once it has caught up, takes the item out; any write of its
            # own (a whole item) forgets the nudges.
            posts = _key(keys.slack_key(execution_id))
            item = self.client.get_item(TableName=self.table, Key=posts, ProjectionExpression="nudges")
            nudges = int(((item.get("Item") or {}).get("nudges") or {}).get("N", "0"))
            again = str(now_ms + min(NUDGE_AGAIN_MS * 2 ** min(nudges, 16), NUDGE_AGAIN_MAX_MS))
            self.client.update_item(
                TableName=self.table,
                Key=posts,
                UpdateExpression="SET #due = :again, retry_at_ms = :again, nudges = :nudges",
                ConditionExpression="#due = :due",
                ExpressionAttributeNames={"#due": keys.DUE_AT},
                ExpressionAttributeValues={
                    ":due": {"N": str(due_at_ms)},
                    ":again": {"N": again},
                    ":nudges": {"N": str(nudges + 1)},
                },
            )
            self.client.update_item(
                TableName=self.table,
                Key=_key(keys.state_key(execution_id)),
                UpdateExpression="SET nudged_at_ms = :now",
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#pk": keys.PK},
                ExpressionAttributeValues={":now": {"N": str(now_ms)}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True


@dataclass(frozen=True)
class Due:
    """Something the sweeper must look at: a run (`run`), a run's waiting timeline (`publish`), or
    a person's App Home that waited for Slack's Retry-After (`home`, with `user_id`)."""

    execution_id: str
    kind: str
    due_at_ms: int
    user_id: str = ""


def executions_table() -> str:
    """The executions table's name, from EXECUTIONS_TABLE (template.yaml sets it on every function)."""
    name = os.environ.get("EXECUTIONS_TABLE", "")
    if not name:
        raise ConfigError(
            "EXECUTIONS_TABLE is not set: it names the executions table (template.yaml sets it in "
            "Lambda; `runbook-bot dev` sets it locally)"
        )
    return name


def _key(key: dict[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"S": v} for k, v in key.items()}
