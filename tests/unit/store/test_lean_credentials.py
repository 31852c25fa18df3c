"""The ack path's lean client finds credentials where Lambda puts them: the environment's keys, or
(on a SnapStart function, which has none in its environment) the container credentials endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.store import lean


class Endpoint:
    """A loopback HTTP server: the credentials endpoint, or a service endpoint that records requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.expires = datetime.now(UTC) + timedelta(hours=1)
        self.serial = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests.append(dict(self.headers))
                if self.headers.get("Authorization") != "container-token":
                    self.send_response(403)
                    self.end_headers()
                    return
                endpoint.serial += 1
                body = {
                    "AccessKeyId": f"ASIACONTAINER{endpoint.serial}",
                    "SecretAccessKey": "container-secret",
                    "Token": f"container-session-{endpoint.serial}",
                    "Expiration": endpoint.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                self._answer(json.dumps(body).encode())

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.requests.append(dict(self.headers))
                self._answer(b"{}")

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def container(monkeypatch) -> Iterator[Endpoint]:
    endpoint = Endpoint()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)  # as on a SnapStart function
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{endpoint.url}/2018-06-01/credentials")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-token")
    yield endpoint
    endpoint.stop()


def test_without_keys_in_the_environment_the_container_endpoint_signs_the_requests(container, monkeypatch):
    service = Endpoint()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", service.url)
        client = lean.dynamodb()
        client.describe_limits()
        client.describe_limits()
        sent = service.requests
        assert "Credential=ASIACONTAINER1/" in sent[0]["Authorization"]
        assert sent[0]["X-Amz-Security-Token"] == "container-session-1"
        assert len(container.requests) == 1, "fetched once, kept until shortly before they expire"
    finally:
        service.stop()


def test_credentials_are_fetched_again_before_they_expire_and_after_a_restore(container):
    now = [datetime.now(UTC).timestamp()]
    credentials = lean.Credentials(clock=lambda: now[0])
    assert credentials()[0] == "ASIACONTAINER1"
    now[0] = container.expires.timestamp() - lean.CONTAINER_REFRESH_SECONDS - 1
    assert credentials()[0] == "ASIACONTAINER1"
    now[0] += 2  # inside the refresh window
    assert credentials()[0] == "ASIACONTAINER2"
    credentials.forget()  # a sandbox restored from a snapshot
    assert credentials()[0] == "ASIACONTAINER3"


def test_the_token_may_come_from_a_file(container, monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("container-token\n")
    monkeypatch.delenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    assert lean.Credentials()()[2] == "container-session-1"


def test_keys_in_the_environment_win(container, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    assert lean.Credentials()() == ("AKIAENV", "env-secret", None)
    assert container.requests == []


def test_a_refused_token_or_a_plain_http_remote_endpoint_is_an_error_that_says_so(container, monkeypatch):
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong")
    with pytest.raises(RuntimeError, match="HTTP 403"):
        lean.Credentials()()
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://example.com/credentials")
    with pytest.raises(RuntimeError, match="must be https"):
        lean.Credentials()()
