"""Shared fixtures: AWS in-process (moto) with the bot's tables created from template.yaml."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "runbook-bot")
# The Slack stand-in keeps Slack's rate limits; the suite runs them 50 times faster than real time.
os.environ.setdefault("SLACK_STAND_IN_TIME_SCALE", "0.02")
# ... so a channel takes 50 posts a second, and runs posting in one channel take turns at that pace.
os.environ.setdefault("SLACK_POSTS_PER_SECOND", f"{1 / float(os.environ['SLACK_STAND_IN_TIME_SCALE']):g}")


@pytest.fixture
def aws() -> Iterator[None]:
    """moto in-process; the bot's tables and queues created from template.yaml."""
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_DYNAMODB_STREAMS"):
        os.environ.pop(name, None)
    with mock_aws():
        yield


@pytest.fixture
def executions_table(aws: None, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3

    from bot.local.template import create_tables, load_template

    tables = create_tables(boto3.client("dynamodb"), load_template(), lambda lid: f"test-{lid}")
    monkeypatch.setenv("EXECUTIONS_TABLE", tables["ExecutionsTable"])
    yield tables["ExecutionsTable"]


class CountingClient:
    """A boto3 client wrapper that counts write requests to the bot's table, for cost assertions.

    Calls are serialized: moto's in-process backend does not make a conditional write atomic
    across threads the way DynamoDB does per item, so racing threads would otherwise both pass
    an `attribute_not_exists` check and the race tests would test moto, not our code.
    """

    WRITES = {"put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"}
    READS = {"get_item", "query"}

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.writes = 0
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self.WRITES | self.READS:
            return attr

        def call(**kwargs: Any) -> Any:
            with self._lock:
                if name in self.WRITES:
                    self.writes += 1
                else:
                    self.reads += 1
                return attr(**kwargs)

        return call


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """moto's HTTP server on loopback, for code that speaks HTTP itself (the lean ack-path client)."""
    from bot.local.aws import EmbeddedAws

    with EmbeddedAws("moto") as aws:
        yield aws


@pytest.fixture
def server_table(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh moto server state with the bot's tables from template.yaml; env points at it."""
    import urllib.request

    from bot.local.template import create_tables, load_template

    urllib.request.urlopen(
        urllib.request.Request(f"{moto_server.moto_url}/moto-api/reset", method="POST"), timeout=10
    ).read()
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    tables = create_tables(moto_server.client("dynamodb"), load_template(), lambda lid: f"test-{lid}")
    monkeypatch.setenv("EXECUTIONS_TABLE", tables["ExecutionsTable"])
    yield tables["ExecutionsTable"]


# The threads a local pipeline runs (bot/local): ingress, stand-ins, stream pollers and their lanes,
# the sweeper and the TTL reaper.
_PIPELINE_THREADS = ("stream-", "ingress-http", "slack-stand-in", "playground", "ttl", "sweeper")


@pytest.fixture(autouse=True, scope="module")
def no_pipeline_outlives_its_module() -> Iterator[None]:
    """A pipeline left running (a start that failed half-way, a fixture without a stop) keeps
    polling and sweeping into the tests after it, which then fail for reasons of its own: CI once
    saw moto's shared backends reset under a leaked poller and `ast.parse` fail in another test.
    Failing the module that leaked it names the culprit instead."""
    before = {thread.ident for thread in threading.enumerate()}
    yield
    import time

    deadline = time.monotonic() + 10
    while True:
        left = sorted(
            thread.name
            for thread in threading.enumerate()
            if thread.ident not in before and thread.is_alive() and thread.name.startswith(_PIPELINE_THREADS)
        )
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"pipeline threads still running after this module: {left}"
