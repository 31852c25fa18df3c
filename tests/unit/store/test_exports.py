"""Evidence-file requests: one standing request per run per minute, uploaded once per request."""

from __future__ import annotations

import boto3

from bot.store import keys
from bot.store.exports import (
    AGAIN_AFTER_MS,
    FAILED,
    REQUESTED,
    UPLOAD_LEASE_MS,
    UPLOADED,
    UPLOADING,
    ExportRequest,
    ExportStore,
    requested_export,
)

T0 = 1_700_000_000_000


def asked(at_ms: int = T0, by: str = "U0ONCALL") -> ExportRequest:
    return ExportRequest("rb-abcdefghij", by, at_ms, "C0ACMEOPS", "https://hooks.slack.com/commands/1")


def test_a_second_ask_within_a_minute_changes_nothing_and_names_the_standing_request(executions_table):
    exports = ExportStore(boto3.client("dynamodb"), executions_table)
    assert exports.request(asked()) is None
    standing = exports.request(asked(T0 + 5_000, by="U0SOMEONE"))
    assert standing is not None and standing.requested_by == "U0ONCALL" and standing.status == REQUESTED
    assert exports.request(asked(T0 + AGAIN_AFTER_MS + 1, by="U0SOMEONE")) is None
    assert exports.get("rb-abcdefghij").requested_by == "U0SOMEONE"


def test_a_request_is_claimed_once_and_its_outcome_recorded(executions_table):
    exports = ExportStore(boto3.client("dynamodb"), executions_table)
    exports.request(asked())
    request = exports.get("rb-abcdefghij")
    assert exports.claim(request, T0 + 1)
    assert not exports.claim(request, T0 + 2), "a redelivered record uploads nothing twice"
    assert exports.get("rb-abcdefghij").status == UPLOADING
    # while it uploads, a new ask waits even after a minute (the upload may be slow)...
    assert exports.request(asked(T0 + AGAIN_AFTER_MS + 10)) is not None
    # ...unless the uploader stopped: its lease ran out
    assert exports.claim(request, T0 + UPLOAD_LEASE_MS + 2), "a stopped upload is taken over"
    exports.finish(request, UPLOADED, "F1,F2", T0 + UPLOAD_LEASE_MS + 3)
    done = exports.get("rb-abcdefghij")
    assert (done.status, done.detail) == (UPLOADED, "F1,F2")
    assert not exports.claim(request, T0 + 10 * UPLOAD_LEASE_MS)


def test_an_outcome_of_a_replaced_request_does_not_overwrite_the_new_one(executions_table):
    exports = ExportStore(boto3.client("dynamodb"), executions_table)
    exports.request(asked())
    old = exports.get("rb-abcdefghij")
    exports.finish(old, FAILED, "not_in_channel", T0 + 1)
    exports.request(asked(T0 + AGAIN_AFTER_MS + 1))
    exports.finish(old, UPLOADED, "late", T0 + AGAIN_AFTER_MS + 2)
    assert exports.get("rb-abcdefghij").status == REQUESTED
    assert not exports.claim(old, T0 + AGAIN_AFTER_MS + 3)


def test_only_a_requested_export_item_is_a_request_for_the_consumer(executions_table):
    image = {
        **{k: {"S": v} for k, v in keys.export_key("rb-abcdefghij").items()},
        "execution_id": {"S": "rb-abcdefghij"},
        "requested_by": {"S": "U0ONCALL"},
        "requested_at_ms": {"N": str(T0)},
        "channel": {"S": "C0ACMEOPS"},
        "export_status": {"S": REQUESTED},
    }
    record = {"eventName": "INSERT", "dynamodb": {"NewImage": image}}
    assert requested_export(record) == ExportRequest("rb-abcdefghij", "U0ONCALL", T0, "C0ACMEOPS")
    for status in (UPLOADING, UPLOADED, FAILED):
        later = {"eventName": "MODIFY", "dynamodb": {"NewImage": {**image, "export_status": {"S": status}}}}
        assert requested_export(later) is None
    assert requested_export({"eventName": "REMOVE", "dynamodb": {"OldImage": image}}) is None
    state = {**image, keys.SK: {"S": keys.STATE_SK}}
    assert requested_export({"eventName": "INSERT", "dynamodb": {"NewImage": state}}) is None
