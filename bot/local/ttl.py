"""DynamoDB's Time to Live, emulated: items whose TTL attribute has passed are deleted by "the service".

Neither moto nor DynamoDB Local deletes expired items, so the local stack does: the reaper scans
the table for items whose `expires_at` (epoch seconds) is past, deletes them, and remembers their
keys so that stream delivery can mark the REMOVE records as DynamoDB marks its own TTL deletes
(`userIdentity: {type: Service, principalId: dynamodb.amazonaws.com}`), which is what the
worker's filter and the retention rule look for. Real DynamoDB deletes within a few days of
expiry; the reaper does it at once, on its interval.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bot.store import keys

SERVICE_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


class TtlReaper:
    def __init__(self, client: Any, table: str, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.table = table
        self.clock = clock
        self.deleted = 0
        self._removed: set[str] = set()
        self._lock = threading.Lock()

    def sweep(self) -> int:
        """Delete every expired item now; returns how many."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "#ttl <= :now",
            "ExpressionAttributeNames": {"#ttl": keys.TTL_ATTRIBUTE, "#pk": keys.PK, "#sk": keys.SK},
            "ExpressionAttributeValues": {":now": {"N": str(int(self.clock()))}},
            "ProjectionExpression": "#pk, #sk",
        }
        count = 0
        while True:
            page = self.client.scan(**request)
            for key in page.get("Items", []):
                with self._lock:
                    self._removed.add(_key_id(key))
                self.client.delete_item(TableName=self.table, Key=key)
                count += 1
            if not page.get("LastEvaluatedKey"):
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        self.deleted += count
        return count

    def removed_by_service(self, key: dict[str, Any]) -> bool:
        """Whether the REMOVE record of `key` is one of ours (TTL), for stream delivery to mark."""
        with self._lock:
            return _key_id(key) in self._removed


def _key_id(key: dict[str, Any]) -> str:
    return json.dumps({k: key[k] for k in (keys.PK, keys.SK) if k in key}, sort_keys=True)
