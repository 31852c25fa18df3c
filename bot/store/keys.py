"""The one key scheme of the executions table. Nothing else builds `pk`/`sk` values."""

from __future__ import annotations

import zlib

PK = "pk"
SK = "sk"
DUE_INDEX = "due-index"  # sparse GSI: only items with something due carry its keys
DUE_BUCKET = "due_bucket"  # GSI partition key: one of DUE_BUCKETS shards, by execution id
DUE_AT = "due_at_ms"  # GSI sort key (N): epoch milliseconds
# Due items spread over this many GSI partitions, so waits, backoffs and expiries of many runs
# never write one partition (a GSI partition takes ~1,000 writes/s). The sweeper queries them all
# in parallel. Items written before sharding carry the old single value until their next write.
DUE_BUCKETS = 8
LEGACY_DUE_BUCKET = "DUE"
TTL_ATTRIBUTE = "expires_at"  # epoch seconds; set when a run ends
# Sparse GSI with an overloaded partition key, one index for every "runs of X, newest first":
# a run's state item sits in its partner's partition (`PARTNER#<partner>`), and a small item per
# run sits in its requester's (`REQUESTER#<user>`). CloudFormation adds one GSI per stack update,
# and the table has `due-index` already, so a second audience shares this one index.
HISTORY_INDEX = "history-index"
HISTORY_PK = "history_pk"  # GSI partition key (S)
HISTORY_AT = "history_at_ms"  # GSI sort key (N): when the run started, epoch milliseconds
APPROVED_BY = "approved_by"  # string set on the state item: who granted an approval (history shows it)

STATE_SK = "STATE"
SLACK_SK = "SLACK"
REQUESTER_SK = "REQUESTER"
EXPORT_SK = "EXPORT"
HOME_SK = "HOME"
RECEIPT_SK = "RECEIVED"


def due_bucket(execution_id: str) -> str:
    """The due-index partition of a run: stable per run, spread evenly across runs."""
    return f"DUE#{zlib.crc32(execution_id.encode()) % DUE_BUCKETS}"


def due_buckets() -> list[str]:
    """Every partition the sweeper must look in, the legacy one included (it drains)."""
    return [f"DUE#{i}" for i in range(DUE_BUCKETS)] + [LEGACY_DUE_BUCKET]


def execution_pk(execution_id: str) -> str:
    return f"EXEC#{execution_id}"


def execution_id_of(pk: str) -> str:
    """The execution id in a run's partition key (`execution_pk` read back)."""
    return pk.removeprefix("EXEC#")


def state_key(execution_id: str) -> dict[str, str]:
    return {PK: execution_pk(execution_id), SK: STATE_SK}


def slack_key(execution_id: str) -> dict[str, str]:
    """The timeline publisher's own item: parent message ts, posted cursor, in-flight post."""
    return {PK: execution_pk(execution_id), SK: SLACK_SK}


def output_key(execution_id: str, step_id: str) -> dict[str, str]:
    """A step's outputs that are too large for the state item."""
    return {PK: execution_pk(execution_id), SK: f"OUTPUT#{step_id}"}


def progress_key(execution_id: str, step_id: str) -> dict[str, str]:
    """Where a long step saves its progress between pages (a crash resumes from it)."""
    return {PK: execution_pk(execution_id), SK: f"PROGRESS#{step_id}"}


def claim_key(execution_id: str, version: int) -> dict[str, str]:
    """Who may move the run from `version`: the worker running its step, the sweeper, a click."""
    return {PK: execution_pk(execution_id), SK: f"CLAIM#{version:010d}"}


def active_run_key(partner: str, runbook: str) -> dict[str, str]:
    """Held while a run of `runbook` for `partner` is active: alarm flaps never start a second."""
    return {PK: f"ACTIVE#{partner}#{runbook}", SK: "LOCK"}


def table_lock_key(partner: str, table: str) -> dict[str, str]:
    """Held while a run that may change `table` (a partner's table, by its real name) is active."""
    return {PK: f"TABLE#{partner}#{table}", SK: "LOCK"}


def channel_key(channel_id: str) -> dict[str, str]:
    """Held while the bot cannot post in a channel (not invited, archived): `/runbook` there says so."""
    return {PK: f"CHANNEL#{channel_id}", SK: "UNREACHABLE"}


def channel_pace_key(channel_id: str) -> dict[str, str]:
    """A channel's turn in Slack: until when Slack said wait (429), and the end of its queue of
    runs whose events wait for a turn to post."""
    return {PK: f"CHANNEL#{channel_id}", SK: "PACE"}


def partner_history(partner: str) -> str:
    """The history-index partition of a partner's runs (their state items)."""
    return f"PARTNER#{partner}"


def requester_history(user_id: str) -> str:
    """The history-index partition of the runs a person started (their requester items)."""
    return f"REQUESTER#{user_id}"


def requester_key(execution_id: str) -> dict[str, str]:
    """A run's entry in its requester's history (App Home's recent runs); gone with the run."""
    return {PK: execution_pk(execution_id), SK: REQUESTER_SK}


def export_key(execution_id: str) -> dict[str, str]:
    """The run's evidence-file request: its stream record makes the timeline consumer upload."""
    return {PK: execution_pk(execution_id), SK: EXPORT_SK}


def home_key(user_id: str) -> dict[str, str]:
    """A person's App Home request: its stream record makes the timeline consumer publish it."""
    return {PK: f"HOME#{user_id}", SK: HOME_SK}


def home_user_of(pk: str) -> str:
    """The user id in a home's partition key (`home_key` read back)."""
    return pk.removeprefix("HOME#")


def event_receipt_key(event_id: str) -> dict[str, str]:
    """An Events API delivery seen (TTL'd): Slack's retry of the same event changes nothing."""
    return {PK: f"EVENT#{event_id}", SK: RECEIPT_SK}


def idempotency_key(execution_id: str, step_id: str, attempt: int, reopened: int = 0) -> str:
    """`<execution>:<step>:<attempt>`; after the run's n-th `/runbook retry`, `...:<attempt>:r<n>`,
    so a resumed step's attempt 1 is a fresh attempt, never the one that failed before."""
    key = f"{execution_id}:{step_id}:{attempt}"
    return f"{key}:r{reopened}" if reopened else key
