"""A lean client for AWS JSON-protocol services (DynamoDB, Secrets Manager) for the ack path.

Why not boto3 here: importing botocore costs ~0.45 s, longer than Bolt itself, and Slack's
3-second budget starts on a cold start. This client speaks the same wire protocol with the same
parameter names as boto3's low-level client (`put_item(TableName=..., Item=...)`), signs with
SigV4 (checked against botocore's signer in the tests), reuses keep-alive connections (one per
request in flight: `runbook-bot dev` and `serve` call it from many request threads at once), and
raises `client.exceptions.<Code>` like boto3 does. Credentials and endpoints come from the
standard variables (Lambda sets AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN); when
they are absent it falls back to botocore's credential chain.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_IDLE_CONNECTIONS = 8  # kept open for reuse; a burst beyond this opens (then closes) extra ones

_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "InternalFailure",
}


class ServiceError(Exception):
    """An AWS error answer; shaped like botocore's ClientError (`.response['Error']['Code']`)."""

    def __init__(self, code: str, message: str, status: int, body: dict[str, Any] | None = None) -> None:
        self.code = code
        self.response: dict[str, Any] = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
            **(body or {}),
        }
        super().__init__(f"{code}: {message}")


class _Exceptions:
    """`client.exceptions.ConditionalCheckFailedException` and friends, made on first use."""

    def __init__(self) -> None:
        self._classes: dict[str, type[ServiceError]] = {}

    def __getattr__(self, code: str) -> type[ServiceError]:
        if code.startswith("_"):
            raise AttributeError(code)
        return self.of(code)

    def of(self, code: str) -> type[ServiceError]:
        if code not in self._classes:
            self._classes[code] = type(code, (ServiceError,), {})
        return self._classes[code]


def sigv4_headers(
    *,
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    service: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    now: datetime,
) -> dict[str, str]:
    """AWS Signature Version 4 for one request: the headers to add (Authorization, X-Amz-*)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = amz_date
    if session_token:
        signed["x-amz-security-token"] = session_token
    names = sorted(signed)
    canonical_request = "\n".join(
        [
            method,
            urllib.parse.quote(parts.path or "/", safe="/-_.~"),
            parts.query,
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {
        "X-Amz-Date": amz_date,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        ),
    }
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    return out


def _error_body(payload: bytes) -> dict[str, Any]:
    """An error answer's JSON body, or {} when it has none (an HTML error page, an empty body)."""
    try:
        answer = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


class LeanJsonClient:
    """One AWS JSON-protocol service: `call("PutItem", {...})`, or boto3-style snake_case methods."""

    def __init__(
        self,
        service: str,
        target_prefix: str,
        json_version: str,
        *,
        endpoint_env: str,
        region: str | None = None,
        max_attempts: int = 4,
        timeout: float = 5.0,
    ) -> None:
        self.service = service
        self.target_prefix = target_prefix
        self.content_type = f"application/x-amz-json-{json_version}"
        self.region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self.endpoint = (
            os.environ.get(endpoint_env)
            or os.environ.get("AWS_ENDPOINT_URL")
            or f"https://{service}.{self.region}.amazonaws.com"
        ).rstrip("/") + "/"
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.exceptions = _Exceptions()
        # An HTTPConnection carries one request at a time: each call takes an idle one (or opens
        # one) and gives it back when its answer is read. Lambda calls one at a time: one connection.
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()
        self.credentials = Credentials()

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":")).encode()
        for attempt in range(1, self.max_attempts + 1):
            try:
                status, payload = self._send(operation, body)
            except (OSError, http.client.HTTPException):
                if attempt == self.max_attempts:
                    raise
                time.sleep(_backoff(attempt))
                continue
            if status < 300:
                return json.loads(payload) if payload else {}
            answer = _error_body(payload)
            code = str(answer.get("__type", "")).rsplit("#", 1)[-1] or f"HTTP{status}"
            message = str(answer.get("message") or answer.get("Message") or "")
            # A 5xx is retried whatever its body says, as botocore does: a front end's own error
            # page (HTML, or nothing) carries no AWS error code at all.
            if (code in _RETRYABLE or status >= 500) and attempt < self.max_attempts:
                time.sleep(_backoff(attempt))
                continue
            extra = {k: v for k, v in answer.items() if k not in {"__type", "message", "Message"}}
            raise self.exceptions.of(code)(code, message, status, extra)
        raise AssertionError("unreachable")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        operation = "".join(part.capitalize() for part in name.split("_"))
        return lambda **params: self.call(operation, params)

    def _send(self, operation: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": self.content_type, "X-Amz-Target": f"{self.target_prefix}.{operation}"}
        access, secret, token = self.credentials()
        headers |= sigv4_headers(
            method="POST",
            url=self.endpoint,
            body=body,
            headers=headers,
            service=self.service,
            region=self.region,
            access_key=access,
            secret_key=secret,
            session_token=token,
            now=datetime.now(UTC),
        )
        conn = self._take()
        try:
            conn.request("POST", urllib.parse.urlsplit(self.endpoint).path or "/", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.status, response.read()
        except BaseException:
            conn.close()  # a half-used connection is never reused
            raise
        self._give_back(conn)
        return answer

    def _take(self) -> http.client.HTTPConnection:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        parts = urllib.parse.urlsplit(self.endpoint)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.netloc, timeout=self.timeout)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            if len(self._idle) < _IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections and forget fetched credentials (calls after this open new
        connections and fetch credentials again)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self.credentials.forget()


def dynamodb() -> LeanJsonClient:
    return LeanJsonClient("dynamodb", "DynamoDB_20120810", "1.0", endpoint_env="AWS_ENDPOINT_URL_DYNAMODB")


def secretsmanager() -> LeanJsonClient:
    return LeanJsonClient(
        "secretsmanager", "secretsmanager", "1.1", endpoint_env="AWS_ENDPOINT_URL_SECRETS_MANAGER"
    )


CONTAINER_REFRESH_SECONDS = 300  # container credentials are fetched again this long before they expire
CONTAINER_HOSTS = ("127.0.0.1", "localhost", "169.254.170.2", "169.254.170.23")


class Credentials:
    """The function's AWS credentials, in botocore's order of the sources Lambda uses: the
    environment's keys, else the container credentials endpoint (a SnapStart function gets its
    role's credentials there, not in the environment), else botocore's full chain.

    Container credentials are kept until shortly before they expire; `forget()` drops them (a
    sandbox restored from a snapshot must fetch its own)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._cached: tuple[str, str, str | None] | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, str, str | None]:
        access = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if access and secret:
            return access, secret, os.environ.get("AWS_SESSION_TOKEN")
        url = _container_url()
        if url:
            with self._lock:
                if self._cached is None or self.clock() >= self._expires_at - CONTAINER_REFRESH_SECONDS:
                    self._cached, self._expires_at = _fetch_container_credentials(url)
                return self._cached
        import botocore.session  # the full chain (profiles, IMDS, SSO) only when nothing above is set

        creds = botocore.session.get_session().get_credentials()
        if creds is None:
            raise RuntimeError("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile")
        frozen = creds.get_frozen_credentials()
        return str(frozen.access_key), str(frozen.secret_key), frozen.token

    def forget(self) -> None:
        with self._lock:
            self._cached, self._expires_at = None, 0.0


def _container_url() -> str:
    full = os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if full:
        return full
    relative = os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    return f"http://169.254.170.2{relative}" if relative else ""


def _fetch_container_credentials(url: str) -> tuple[tuple[str, str, str | None], float]:
    """GET the endpoint with its authorization token (AWS_CONTAINER_AUTHORIZATION_TOKEN, or the
    file AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE names), as the AWS SDKs' container provider does."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and parts.hostname not in CONTAINER_HOSTS:
        raise RuntimeError(
            f"AWS_CONTAINER_CREDENTIALS_FULL_URI {url!r} must be https, or http on a loopback or "
            "container-metadata address"
        )
    headers = {"Accept": "application/json"}
    token_file = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    token = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    if token_file:
        with open(token_file, encoding="utf-8") as file:
            token = file.read().strip()
    if token:
        headers["Authorization"] = token
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.netloc, timeout=2)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"the container credentials endpoint answered HTTP {response.status}")
    answer = json.loads(body)
    expires = datetime.fromisoformat(str(answer["Expiration"]).replace("Z", "+00:00")).timestamp()
    return (str(answer["AccessKeyId"]), str(answer["SecretAccessKey"]), answer.get("Token")), expires


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(0.5, 0.025 * 2**attempt))
