"""`runbook-bot serve`: the same ingress over HTTP for a real Slack app (here, Slack is the stand-in)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bot.local.aws import free_port
from bot.local.slack_api import SlackStandIn
from bot.local.slack_requests import signed_headers, slash_command_body

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SECRET = "a-real-apps-signing-secret"


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError("serve did not listen")


def test_serve_answers_a_signed_command_with_the_apps_own_secret_and_stops_on_ctrl_c():
    slack = SlackStandIn(token="xoxb-real-app")
    slack_url = slack.start()
    port = free_port()
    env = {
        **os.environ,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_BOT_TOKEN": "xoxb-real-app",
        "SLACK_API_URL": slack_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        body = slash_command_body("throttle partner-acme", user_id="U0DEVONCALL", channel_id="C0ACMEOPS")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/slack/events",
            data=body.encode(),
            headers=signed_headers(SECRET, body),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # a cold first answer on a busy machine
            answer = json.loads(response.read())
        assert "execution `rb-" in answer["text"]
        forged = urllib.request.Request(
            f"http://127.0.0.1:{port}/slack/events",
            data=body.encode(),
            headers=signed_headers("the dev secret is not this app's", body),
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code == 401
        deadline = time.monotonic() + 30  # the publisher posts to the Slack that SLACK_API_URL names
        while time.monotonic() < deadline and not slack.messages("C0ACMEOPS"):
            time.sleep(0.2)
        assert slack.messages("C0ACMEOPS")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        slack.stop()
    assert proc.returncode == 0 and "stopped" in out


def test_serve_without_slack_secrets_says_what_to_set():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--port", str(free_port())],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SLACK_SECRET_ARN" in done.stderr or "SLACK_SIGNING_SECRET" in done.stderr


def test_the_manifest_points_commands_and_buttons_at_one_request_url():
    manifest = yaml.safe_load((REPO / "slack-manifest.yaml").read_text())
    command = manifest["features"]["slash_commands"][0]
    assert command["command"] == "/runbook"
    assert command["url"] == manifest["settings"]["interactivity"]["request_url"]
    assert command["url"].endswith("/slack/events")
    assert {"commands", "chat:write", "usergroups:read"} <= set(manifest["oauth_config"]["scopes"]["bot"])
