"""Slack's documented request-signing example, as a test vector for both sides of the bot.

From https://api.slack.com/authentication/verifying-requests-from-slack: the signing secret,
timestamp and body below must give exactly the signature Slack's page prints.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.local.slack_requests import signature, signed_headers

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TIMESTAMP = 1531420618
BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
EXPECTED = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def verifier_at(now: float) -> SignatureVerifier:
    return SignatureVerifier(SECRET, clock=type("Clock", (), {"now": staticmethod(lambda: now)})())


def test_the_documented_vector_is_what_hmac_sha256_gives():
    mac = hmac.new(SECRET.encode(), f"v0:{TIMESTAMP}:{BODY}".encode(), hashlib.sha256).hexdigest()
    assert f"v0={mac}" == EXPECTED


def test_our_signer_reproduces_slacks_example():
    assert signature(SECRET, TIMESTAMP, BODY) == EXPECTED
    headers = signed_headers(SECRET, BODY, TIMESTAMP)
    assert headers["x-slack-signature"] == EXPECTED and headers["x-slack-request-timestamp"] == str(TIMESTAMP)


def test_the_ingress_verifier_accepts_the_example_at_its_time():
    assert verifier_at(TIMESTAMP + 10).is_valid(BODY, str(TIMESTAMP), EXPECTED)


@pytest.mark.parametrize(
    ("body", "secret", "now"),
    [
        (BODY.replace("foobar", "foobaz"), SECRET, TIMESTAMP),  # one byte of the body changed
        (BODY, SECRET[:-1] + "6", TIMESTAMP),  # another app's secret
        (BODY, SECRET, TIMESTAMP + 5 * 60 + 1),  # older than five minutes
        (BODY, SECRET, TIMESTAMP - 5 * 60 - 1),  # from the future
    ],
)
def test_the_ingress_verifier_refuses_what_is_not_exactly_the_example(body, secret, now):
    verifier = SignatureVerifier(secret, clock=type("Clock", (), {"now": staticmethod(lambda: now)})())
    assert not verifier.is_valid(body, str(TIMESTAMP), EXPECTED)
