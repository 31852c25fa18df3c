"""Slack's documented request-signing example as a test vector, for the signer and for the ingress.

From https://api.slack.com/authentication/verifying-requests-from-slack: this signing secret,
timestamp and body give exactly this signature. The project signs with
bot/local/slack_requests.py; the ingress verifies with Bolt's RequestVerification middleware
(bot/slack/app.py builds `App(signing_secret=..., request_verification_enabled=True)`), which is
slack_sdk's SignatureVerifier with the wall clock. The ingress tests run the real handler
(bot/handlers/ingress.py) on API Gateway HTTP API events with the clock set to the example's time.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier

from bot.local.slack_requests import http_api_event, signature, signed_headers, slash_command_body

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TIMESTAMP = 1531420618
BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
EXPECTED = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
FIVE_MINUTES = 5 * 60


class FixedClock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def verifier(secret: str = SECRET, now: float = TIMESTAMP) -> SignatureVerifier:
    return SignatureVerifier(secret, clock=FixedClock(now))


def one_byte_changed(body: str, index: int) -> str:
    replacement = "A" if body[index] != "A" else "B"
    return body[:index] + replacement + body[index + 1 :]


# -- the vector itself ---------------------------------------------------------------------------


def test_the_documented_vector_is_hmac_sha256_of_the_v0_base_string():
    base = f"v0:{TIMESTAMP}:{BODY}".encode()
    assert "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest() == EXPECTED


# -- our signer ----------------------------------------------------------------------------------


def test_the_project_signer_produces_slacks_documented_signature():
    assert signature(SECRET, TIMESTAMP, BODY) == EXPECTED


def test_signed_headers_carry_the_documented_signature_and_timestamp_as_slack_sends_them():
    headers = signed_headers(SECRET, BODY, TIMESTAMP)
    assert headers == {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(TIMESTAMP),
        "x-slack-signature": EXPECTED,
    }


def test_the_signer_changes_the_signature_for_any_other_secret_timestamp_or_body():
    assert signature(SECRET + "x", TIMESTAMP, BODY) != EXPECTED
    assert signature(SECRET, TIMESTAMP + 1, BODY) != EXPECTED
    assert signature(SECRET, TIMESTAMP, BODY + "&") != EXPECTED


# -- slack_sdk's SignatureVerifier, as Bolt uses it -------------------------------------------------


def test_the_verifier_accepts_the_documented_example_at_its_timestamp():
    assert verifier().is_valid(BODY, str(TIMESTAMP), EXPECTED)
    assert verifier().is_valid(BODY.encode(), str(TIMESTAMP), EXPECTED)
    assert verifier().is_valid_request(
        BODY, {"X-Slack-Request-Timestamp": str(TIMESTAMP), "X-Slack-Signature": EXPECTED}
    )


@pytest.mark.parametrize("index", [0, 1, BODY.index("foobar"), BODY.index("text=") + 4, len(BODY) - 1])
def test_the_verifier_rejects_a_body_with_one_byte_changed(index):
    assert not verifier().is_valid(one_byte_changed(BODY, index), str(TIMESTAMP), EXPECTED)


@pytest.mark.parametrize(
    "changed",
    [BODY + "&", BODY[:-1], " " + BODY, BODY.replace("text=", "text=x")],
)
def test_the_verifier_rejects_a_body_with_a_byte_added_or_removed(changed):
    assert not verifier().is_valid(changed, str(TIMESTAMP), EXPECTED)


@pytest.mark.parametrize("secret", [SECRET[:-1] + "6", SECRET.upper(), SECRET + " ", "another-apps-secret"])
def test_the_verifier_rejects_the_example_under_a_wrong_secret(secret):
    assert not verifier(secret=secret).is_valid(BODY, str(TIMESTAMP), EXPECTED)


@pytest.mark.parametrize("offset", [-FIVE_MINUTES, -60, 0, 60, FIVE_MINUTES])
def test_the_verifier_accepts_the_example_up_to_five_minutes_either_side(offset):
    assert verifier(now=TIMESTAMP + offset).is_valid(BODY, str(TIMESTAMP), EXPECTED)


@pytest.mark.parametrize(
    "offset", [FIVE_MINUTES + 1, 10 * 60, 24 * 3600, -(FIVE_MINUTES + 1), -3600], ids=str
)
def test_the_verifier_rejects_the_example_more_than_five_minutes_off(offset):
    # Positive: a replay of an old request; negative: a timestamp from the future.
    assert not verifier(now=TIMESTAMP + offset).is_valid(BODY, str(TIMESTAMP), EXPECTED)


@pytest.mark.parametrize(
    "sig",
    [
        EXPECTED.upper(),
        EXPECTED[3:],  # without the v0= version prefix
        "v1=" + EXPECTED[3:],
        EXPECTED[:-1] + "4",
        "",
    ],
)
def test_the_verifier_rejects_any_other_signature_string(sig):
    assert not verifier().is_valid(BODY, str(TIMESTAMP), sig)


def test_the_verifier_rejects_a_request_without_timestamp_or_signature():
    assert not verifier().is_valid(BODY, None, EXPECTED)
    assert not verifier().is_valid(BODY, str(TIMESTAMP), None)
    assert not verifier().is_valid_request(BODY, {})


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(min_size=1, max_size=64).filter(str.strip),
    body=st.text(min_size=1, max_size=400),
    timestamp=st.integers(min_value=1_000_000_000, max_value=4_000_000_000),
    data=st.data(),
)
def test_whatever_our_signer_signs_the_verifier_accepts_and_any_changed_character_it_rejects(
    secret, body, timestamp, data
):
    sig = signature(secret, timestamp, body)
    assert verifier(secret, now=timestamp).is_valid(body, str(timestamp), sig)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="index")
    other = data.draw(st.characters().filter(lambda c: c != body[index]), label="replacement")
    changed = body[:index] + other + body[index + 1 :]
    assert not verifier(secret, now=timestamp).is_valid(changed, str(timestamp), sig)


# -- the ingress path: the real Lambda handler on HttpApi events -----------------------------------


@pytest.fixture
def ingress(monkeypatch):
    """The Slack-facing handler configured with the documented secret, at the documented time."""
    import slack_sdk.signature

    from bot.local.pipeline import fresh_sandboxes

    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-signing-vector")
    monkeypatch.setenv("EXECUTIONS_TABLE", "no-table-is-read-by-these-requests")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api/")  # nothing listens: no call may be made
    clock = {"now": float(TIMESTAMP)}
    # Bolt builds SignatureVerifier with slack_sdk's default Clock, which reads this module's time().
    monkeypatch.setattr(slack_sdk.signature, "time", lambda: clock["now"])
    fresh_sandboxes()
    from bot.handlers import ingress as module

    yield lambda event: module.handler(event, None), clock
    fresh_sandboxes()


def event(body: str = BODY, *, timestamp: str = str(TIMESTAMP), sig: str = EXPECTED, base64_body=False):
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": sig,
    }
    return http_api_event(body, headers, base64_body=base64_body)


@pytest.mark.parametrize("base64_body", [False, True])
def test_the_ingress_accepts_the_documented_example_at_its_timestamp(ingress, base64_body):
    handle, _ = ingress
    response = handle(event(base64_body=base64_body))
    # Verified, then routed: the example is Slack's /webhook-collect, which the bot has no listener for.
    assert response["statusCode"] == 404


def test_the_ingress_answers_a_runbook_command_signed_by_our_signer_with_the_documented_secret(ingress):
    handle, _ = ingress
    body = slash_command_body("list", user_id="U2CERLKJA", channel_id="C0ACMEOPS", trigger_id="1.2.3")
    headers = signed_headers(SECRET, body, TIMESTAMP)
    response = handle(http_api_event(body, headers))
    assert response["statusCode"] == 200 and "*Runbooks*" in json.loads(response["body"])["text"]


@pytest.mark.parametrize("index", [0, BODY.index("foobar"), len(BODY) - 1])
def test_the_ingress_refuses_the_example_with_one_byte_changed(ingress, index):
    handle, _ = ingress
    assert handle(event(one_byte_changed(BODY, index)))["statusCode"] == 401


def test_the_ingress_refuses_the_example_signed_with_a_wrong_secret(ingress):
    handle, _ = ingress
    forged = signature(SECRET[:-1] + "6", TIMESTAMP, BODY)
    assert handle(event(sig=forged))["statusCode"] == 401


def test_the_ingress_configured_with_another_secret_refuses_the_example(ingress, monkeypatch):
    from bot.local.pipeline import fresh_sandboxes

    handle, _ = ingress
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "another-apps-secret")
    fresh_sandboxes()
    assert handle(event())["statusCode"] == 401


@pytest.mark.parametrize("offset", [FIVE_MINUTES + 1, 3600, -(FIVE_MINUTES + 1)])
def test_the_ingress_refuses_the_example_more_than_five_minutes_off(ingress, offset):
    handle, clock = ingress
    clock["now"] = TIMESTAMP + offset
    assert handle(event())["statusCode"] == 401


def test_the_ingress_still_accepts_the_example_at_exactly_five_minutes(ingress):
    handle, clock = ingress
    clock["now"] = TIMESTAMP + FIVE_MINUTES
    assert handle(event())["statusCode"] == 404


def test_the_ingress_refuses_an_unsigned_request(ingress):
    handle, _ = ingress
    unsigned = http_api_event(BODY, {"content-type": "application/x-www-form-urlencoded"})
    assert handle(unsigned)["statusCode"] == 401


@pytest.mark.parametrize("timestamp", [" 1531420618", "+1531420618", "1_531_420_618"])
def test_the_ingress_refuses_a_reformatted_timestamp_because_it_is_part_of_the_signed_string(
    ingress, timestamp
):
    handle, _ = ingress
    assert handle(event(timestamp=timestamp))["statusCode"] == 401


@pytest.mark.parametrize("timestamp", ["abc", "", "1531420618.5"])
def test_the_ingress_refuses_a_non_numeric_timestamp_with_401(ingress, timestamp):
    handle, _ = ingress
    assert handle(event(timestamp=timestamp))["statusCode"] == 401
