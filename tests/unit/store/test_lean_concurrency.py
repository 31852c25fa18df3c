"""The lean client is shared by request threads (`runbook-bot dev`/`serve` answer from threads):
simultaneous calls each get their own answer, never `CannotSendRequest` or someone else's reply."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bot.store.lean import LeanJsonClient, dynamodb

THREADS = 32


class EchoServer:
    """A JSON-protocol endpoint that answers each call with its own operation and body, slowly
    enough (20 ms) that calls overlap; it records how many were in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.connections: set[tuple[str, int]] = set()
        self.lock = threading.Lock()
        server = self

        class Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as AWS endpoints do

            def do_POST(self) -> None:
                with server.lock:
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                    server.connections.add(self.client_address)
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(0.02)
                answer = json.dumps(
                    {"Target": self.headers["x-amz-target"], "Echo": json.loads(body)}
                ).encode()
                with server.lock:
                    server.in_flight -= 1
                self.send_response(200)
                self.send_header("content-type", "application/x-amz-json-1.0")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Request)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> Iterator[EchoServer]:
    server = EchoServer()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    yield server
    server.stop()


def _at_once(client: LeanJsonClient, call: Any, rounds: int = 1) -> list[Any]:
    """`call(client, i)` from THREADS threads released together, `rounds` times each."""
    start = threading.Barrier(THREADS)

    def worker(i: int) -> list[Any]:
        start.wait()
        return [call(client, i * rounds + r) for r in range(rounds)]

    with ThreadPoolExecutor(THREADS) as pool:
        return [answer for answers in pool.map(worker, range(THREADS)) for answer in answers]


def test_simultaneous_calls_each_get_their_own_answer(echo: EchoServer) -> None:
    client = dynamodb()

    answers = _at_once(client, lambda c, i: c.get_item(TableName="t", Key={"n": {"N": str(i)}}), rounds=3)

    assert [a["Echo"]["Key"]["n"]["N"] for a in answers] == [str(i) for i in range(THREADS * 3)]
    assert {a["Target"] for a in answers} == {"DynamoDB_20120810.GetItem"}
    assert echo.most_in_flight > 1  # the calls really overlapped


def test_a_connection_is_reused_by_calls_one_after_another(echo: EchoServer) -> None:
    client = dynamodb()

    for i in range(5):
        assert client.get_item(TableName="t", Key={"n": {"N": str(i)}})["Echo"]["Key"]["n"]["N"] == str(i)

    assert len(echo.connections) == 1  # one keep-alive connection, as on Lambda


def test_after_a_burst_calls_reuse_the_bursts_connections(echo: EchoServer) -> None:
    client = dynamodb()
    _at_once(client, lambda c, i: c.get_item(TableName="t", Key={"n": {"N": str(i)}}))
    opened = len(echo.connections)

    for i in range(10):
        client.get_item(TableName="t", Key={"n": {"N": str(i)}})

    assert len(echo.connections) == opened


def test_concurrent_writes_and_reads_against_moto_server(server_table: str) -> None:
    client = dynamodb()

    def put_then_get(c: LeanJsonClient, i: int) -> dict[str, Any]:
        key = {"pk": {"S": f"TEST#{i}"}, "sk": {"S": "STATE"}}
        c.put_item(TableName=server_table, Item={**key, "n": {"N": str(i)}})
        return c.get_item(TableName=server_table, Key=key, ConsistentRead=True)["Item"]

    items = _at_once(client, put_then_get, rounds=2)

    assert [int(item["n"]["N"]) for item in items] == list(range(THREADS * 2))


class _Flaky(BaseHTTPRequestHandler):
    """Answers what `script` says next: (status, body), one entry per request."""

    script: list[tuple[int, bytes]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status, body = self.script.pop(0)
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Flaky]]:
    handler = type("Flaky", (_Flaky,), {"script": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    yield handler
    server.shutdown()
    server.server_close()


def test_a_5xx_error_page_that_is_not_json_is_retried_like_any_5xx(flaky: type[_Flaky]) -> None:
    """CI saw moto's front end answer a crashed request with an HTML 500: the ack path crashed on
    json.loads and answered "internal error" where botocore would have retried."""
    flaky.script[:] = [(500, b"<!doctype html><title>500 Internal Server Error</title>"), (200, b"{}")]
    assert dynamodb().put_item(TableName="t", Item={"pk": {"S": "a"}}) == {}
    assert flaky.script == []


def test_a_non_json_error_that_persists_names_its_http_status(flaky: type[_Flaky]) -> None:
    client = dynamodb()
    flaky.script[:] = [(502, b"")] * client.max_attempts
    with pytest.raises(Exception, match="HTTP502"):
        client.put_item(TableName="t", Item={"pk": {"S": "a"}})
    flaky.script[:] = [(400, b"not json")]
    with pytest.raises(Exception, match="HTTP400"):
        client.put_item(TableName="t", Item={"pk": {"S": "a"}})
