"""Injected DynamoDB faults: a throttling simulator and random failures, as a botocore hook.

One `FaultInjector` installs on any boto3 DynamoDB client (`install(client)`) and answers some
requests itself before they are sent, exactly as DynamoDB would answer them:

- capacity: per-table write and read units per second (token buckets with DynamoDB's burst
  allowance) and the per-partition ceiling (1,000 WCU / 3,000 RCU per partition key value);
  a request that finds its bucket empty gets `ProvisionedThroughputExceededException`;
- random faults at given rates (`throttle=0.3,timeout=0.05,error=0.01`): throttling, a read
  timeout, or an `InternalServerError`.

Because it answers at `before-send`, botocore's own retry policy sees these answers as it would
see the real ones, so a client's retry configuration is part of what a drill or benchmark tests.
Drills use it on the partner's session; tests and benchmarks also put it on the bot's own client.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.exceptions import RunbookBotError

FAULT_KINDS = {
    "throttle": "share of requests answered ProvisionedThroughputExceededException",
    "timeout": "share of requests that time out before an answer",
    "error": "share of requests answered InternalServerError (HTTP 500)",
    "guard": "share of a guarded step's safe points that find an injected guard alarm in ALARM (the run "
    "pauses for its approvers; once resumed over, the injected alarm pauses it no more)",
}
DATA_PLANE = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
PARTITION_WCU = 1_000.0  # DynamoDB's ceiling for one partition key value
PARTITION_RCU = 3_000.0
BURST_SECONDS = 300.0  # DynamoDB keeps up to 5 minutes of unused capacity as burst


class FaultSpecError(RunbookBotError):
    """A fault list that cannot be read; the message says what is valid."""


@dataclass(frozen=True)
class FaultSpec:
    """Rates of injected faults, each a share of requests between 0 and 1."""

    throttle: float = 0.0
    timeout: float = 0.0
    error: float = 0.0
    guard: float = 0.0  # not a DynamoDB fault: the worker's guard check injects it (bot/engine/executor.py)

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """`throttle=0.3,timeout=0.05` (or `30%`); an empty text injects nothing."""
        rates: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in FAULT_KINDS:
                valid = ", ".join(f"{k}=<0..1> ({v})" for k, v in FAULT_KINDS.items())
                raise FaultSpecError(f"`{part}` is not a fault; valid faults: {valid}")
            if name in rates:
                raise FaultSpecError(f"fault `{name}` is given twice")
            rates[name] = _rate(name, value.strip())
        return cls(**rates)

    @classmethod
    def from_dict(cls, rates: dict[str, Any] | None) -> FaultSpec:
        return cls.parse(",".join(f"{k}={v}" for k, v in (rates or {}).items()))

    def as_dict(self) -> dict[str, float]:
        return {
            k: v
            for k, v in (
                ("throttle", self.throttle),
                ("timeout", self.timeout),
                ("error", self.error),
                ("guard", self.guard),
            )
            if v
        }

    def __str__(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.as_dict().items()) or "no faults"

    def __bool__(self) -> bool:
        return bool(self.as_dict())


def _rate(name: str, value: str) -> float:
    try:
        rate = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise FaultSpecError(f"fault `{name}` needs a share like 0.3 or 30%, not `{value}`") from None
    if not 0 <= rate <= 1:
        raise FaultSpecError(f"fault `{name}` must be between 0 and 1 (or 0% and 100%), not {value}")
    return rate


@dataclass(frozen=True)
class Capacity:
    """Provisioned capacity of one table, in units per second."""

    write_units: float = math.inf
    read_units: float = math.inf
    burst_seconds: float = BURST_SECONDS


class _Bucket:
    def __init__(self, rate: float, burst_seconds: float, now: float) -> None:
        self.rate = rate
        self.size = rate * max(1.0, burst_seconds)
        self.tokens = rate  # a fresh table starts with one second's worth, not a full burst
        self.at = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, units: float, now: float) -> bool:
        """Take `units` if there is anything left; a bucket may go into debt by one request."""
        self.refill(now)
        if self.tokens <= 0:
            return False
        self.tokens -= units
        return True

    def charge(self, units: float, now: float) -> None:
        self.refill(now)
        self.tokens -= units


@dataclass
class FaultStats:
    requests: Counter[str] = field(default_factory=Counter)  # by operation
    throttled: int = 0  # capacity and injected throttling
    throttled_by_capacity: int = 0
    timeouts: int = 0
    errors: int = 0
    consumed_write_units: float = 0.0
    consumed_read_units: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def injected(self) -> int:
        return self.throttled + self.timeouts + self.errors


class FaultInjector:
    """Capacity and random faults for the DynamoDB clients it is installed on."""

    def __init__(
        self,
        faults: FaultSpec | None = None,
        capacity: dict[str, Capacity] | None = None,
        *,
        tables: Iterable[str] | None = None,
        operations: Iterable[str] = DATA_PLANE,
        seed: int | str = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults or FaultSpec()
        self.capacity = dict(capacity or {})
        self.tables = frozenset(tables) if tables is not None else None  # None: every table
        self.operations = frozenset(operations)
        self.stats = FaultStats()
        self.enabled = True
        self._rng = random.Random(seed)
        self._clock = clock
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # the table of this thread's request in flight

    def install(self, client: Any) -> Any:
        """Answer `client`'s DynamoDB requests where a fault applies; returns the client."""
        # First in line: an in-process moto mock answers at the same event.
        client.meta.events.register_first("before-send.dynamodb", self._before_send)
        client.meta.events.register("after-call.dynamodb", self._after_call)
        return client

    # -- the hook --------------------------------------------------------------------------

    def _before_send(self, request: Any, **_: Any) -> Any:
        target = request.headers.get("X-Amz-Target", "")
        operation = (target.decode() if isinstance(target, bytes) else str(target)).rpartition(".")[2]
        if not self.enabled or operation not in self.operations:
            return None
        body = json.loads(request.body or b"{}")
        tables = list(_tables_of(operation, body))
        self._local.table = tables[0] if tables else None
        if self.tables is not None and not self.tables.intersection(tables):
            return None
        with self._lock:
            self.stats.requests[operation] += 1
            roll = self._rng.random()
            if roll < self.faults.timeout:
                self.stats.timeouts += 1
                fault = "timeout"
            elif roll < self.faults.timeout + self.faults.error:
                self.stats.errors += 1
                fault = "error"
            elif roll < self.faults.timeout + self.faults.error + self.faults.throttle:
                self.stats.throttled += 1
                fault = "throttle"
            elif not self._within_capacity(operation, body, tables):
                self.stats.throttled += 1
                self.stats.throttled_by_capacity += 1
                fault = "throttle"
            else:
                return None
        if fault == "timeout":
            from botocore.exceptions import ReadTimeoutError

            raise ReadTimeoutError(endpoint_url=request.url)
        if fault == "error":
            return _error_response(
                request.url, 500, "InternalServerError", "Internal server error (injected)"
            )
        return _error_response(
            request.url,
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API. (injected)",
        )

    def _after_call(self, http_response: Any = None, parsed: Any = None, model: Any = None, **_: Any) -> None:
        """Charge reads by what they returned (a read's cost is only known afterwards)."""
        if model is None or model.name not in {"Query", "Scan", "GetItem", "BatchGetItem"}:
            return
        if http_response is None or http_response.status_code != 200 or not isinstance(parsed, dict):
            return
        table = getattr(self._local, "table", None)
        if table is None:
            return
        size = len(http_response.content or b"")
        units = max(0.5, math.ceil(size / 4096) * 0.5)
        with self._lock:
            self.stats.consumed_read_units += units
            cap = self.capacity.get(table)
            if cap is not None and cap.read_units != math.inf:
                self._bucket(table, "read", "", cap).charge(units, self._clock())

    # -- capacity ----------------------------------------------------------------------------

    def _within_capacity(self, operation: str, body: dict[str, Any], tables: list[str]) -> bool:
        now = self._clock()
        write = operation in WRITES
        kind = "write" if write else "read"
        units = _write_units(operation, body) if write else 1.0
        for table in tables:
            cap = self.capacity.get(table)
            rate = (cap.write_units if write else cap.read_units) if cap else math.inf
            if cap is None or rate == math.inf:
                continue
            if not self._bucket(table, kind, "", cap).take(units, now):
                return False
            partition = _partition_of(body)
            if partition:
                per = PARTITION_WCU if write else PARTITION_RCU
                hot = self._buckets.setdefault((table, kind, partition), _Bucket(per, cap.burst_seconds, now))
                if not hot.take(units, now):
                    return False
        if write:
            self.stats.consumed_write_units += units
        return True

    def _bucket(self, table: str, kind: str, partition: str, cap: Capacity) -> _Bucket:
        key = (table, kind, partition)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate = cap.write_units if kind == "write" else cap.read_units
            bucket = self._buckets[key] = _Bucket(rate, cap.burst_seconds, self._clock())
        return bucket


def _tables_of(operation: str, body: dict[str, Any]) -> Iterator[str]:
    if "TableName" in body:
        yield str(body["TableName"])
    elif operation in {"BatchWriteItem", "BatchGetItem"}:
        yield from body.get("RequestItems", {})
    elif operation in {"TransactWriteItems", "TransactGetItems"}:
        for entry in body.get("TransactItems", []):
            for op in entry.values():
                if isinstance(op, dict) and "TableName" in op:
                    yield str(op["TableName"])


def _write_units(operation: str, body: dict[str, Any]) -> float:
    """Write units of a request: 1 per started KB of each item (DynamoDB's rounding)."""
    if operation == "BatchWriteItem":
        return float(
            sum(
                _item_units(r.get("PutRequest", {}).get("Item") or r.get("DeleteRequest", {}).get("Key"))
                for requests in body.get("RequestItems", {}).values()
                for r in requests
            )
        )
    if operation == "TransactWriteItems":
        return 2.0 * len(body.get("TransactItems", []))  # transactions cost double
    return float(_item_units(body.get("Item") or body.get("Key")))


def _item_units(item: Any) -> int:
    size = len(json.dumps(item, separators=(",", ":"))) if item else 1
    return max(1, math.ceil(size / 1024))


def _partition_of(body: dict[str, Any]) -> str:
    """The request's partition key value as text (first key attribute), if it names one item."""
    keyed = body.get("Item") or body.get("Key")
    if isinstance(keyed, dict) and keyed:
        name = sorted(keyed)[0] if "Key" in body else next(iter(keyed))
        return f"{name}={json.dumps(keyed[name], sort_keys=True)}"
    values = body.get("ExpressionAttributeValues")
    if body.get("KeyConditionExpression") and isinstance(values, dict) and values:
        return f"query={json.dumps(values, sort_keys=True)}"
    return ""


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def _error_response(url: str, status: int, code: str, message: str) -> Any:
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["x-amzn-RequestId"] = f"injected-{random.getrandbits(48):012x}"
    headers["Content-Length"] = str(len(body))
    return AWSResponse(url, status, headers, _Body(body))
