"""The ack path's lean client signs exactly as botocore does (SigV4), with and without a session token."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bot.store.lean import sigv4_headers

NOW = dt.datetime(2026, 11, 23, 7, 30, 5, tzinfo=dt.UTC)
BODY = b'{"TableName":"runbook-bot-executions","Item":{"pk":{"S":"EXEC#rb-abcdefghij"}}}'


@pytest.mark.parametrize("token", [None, "IQoJb3JpZ2luX2VjE...session"])
@pytest.mark.parametrize(
    ("url", "service", "target"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com/", "dynamodb", "DynamoDB_20120810.PutItem"),
        (
            "https://secretsmanager.eu-west-1.amazonaws.com/",
            "secretsmanager",
            "secretsmanager.GetSecretValue",
        ),
        ("http://127.0.0.1:8000/", "dynamodb", "DynamoDB_20120810.GetItem"),
    ],
)
def test_the_lean_signature_is_botocores(url, service, target, token):
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target}
    ours = sigv4_headers(
        method="POST",
        url=url,
        body=BODY,
        headers=headers,
        service=service,
        region="eu-west-1",
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token=token,
        now=NOW,
    )
    request = AWSRequest(method="POST", url=url, data=BODY, headers=dict(headers))
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(credentials, service, "eu-west-1").add_auth(request)
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    assert ours["Authorization"] == request.headers["Authorization"]
    if token:
        assert ours["X-Amz-Security-Token"] == request.headers["X-Amz-Security-Token"]
