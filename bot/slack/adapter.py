"""API Gateway (HTTP API, payload 2.0; REST/v1 too) and function URL events <-> Bolt requests.

Our own small adapter instead of `slack_bolt.adapter.aws_lambda`: that one installs a lazy
listener runner that invokes Lambda functions (the ingress must never do that: all asynchronous
work travels through the table's stream) and imports boto3, which costs the cold start ~0.5 s.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse


class BadEvent(ValueError):
    """The event is not an HTTP request we can read."""


def to_bolt_request(event: dict[str, Any]) -> BoltRequest:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadEvent("the body is marked base64-encoded but is not valid base64 UTF-8") from None
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    query = event.get("rawQueryString") or ""
    return BoltRequest(body=body, query=query, headers=headers)


def method_of(event: dict[str, Any]) -> str:
    context = event.get("requestContext") or {}
    return str(
        (context.get("http") or {}).get("method")
        or context.get("httpMethod")
        or event.get("httpMethod")
        or ""
    )


def to_lambda_response(response: BoltResponse) -> dict[str, Any]:
    return {
        "statusCode": response.status,
        "body": response.body,
        "headers": response.first_headers(),
        "isBase64Encoded": False,
    }


def plain_response(status: int, text: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "body": text,
        "headers": {"content-type": "text/plain; charset=utf-8"},
        "isBase64Encoded": False,
    }
