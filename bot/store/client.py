"""The table-client protocol every store takes: boto3's DynamoDB client and the ack path's lean
client (`bot.store.lean`) both satisfy it. It imports nothing heavy, so the ack path can name it."""

from __future__ import annotations

from typing import Any, Protocol


class TableClient(Protocol):
    """What the stores need of a DynamoDB client. Both clients raise `client.exceptions.<Code>`
    for DynamoDB's error codes, so each store maps them to its own outcomes (TransitionConflict,
    ClaimHeld, None/False) the same way for either."""

    exceptions: Any

    def put_item(self, **request: Any) -> Any: ...
    def get_item(self, **request: Any) -> Any: ...
    def update_item(self, **request: Any) -> Any: ...
    def delete_item(self, **request: Any) -> Any: ...
    def query(self, **request: Any) -> Any: ...
    def transact_write_items(self, **request: Any) -> Any: ...
