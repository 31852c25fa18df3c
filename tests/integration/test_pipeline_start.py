"""The local pipeline's start: what `dev` prepares before the Slack request URL answers (the demo
partners), a request that comes meanwhile waits for it instead of failing, and a failed
preparation stops cleanly."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from bot.local.aws import free_port
from bot.local.pipeline import LocalPipeline, PipelineOptions
from bot.local.slack_requests import DEV_SIGNING_SECRET, signed_headers, slash_command_body

pytestmark = pytest.mark.integration


def post_command(port: int, text: str) -> tuple[int, str, float]:
    body = slash_command_body(text, user_id="U0DEVONCALL", channel_id="C0ACMEOPS")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/events",
        data=body.encode(),
        headers=signed_headers(DEV_SIGNING_SECRET, body),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, str(json.loads(response.read())["text"]), time.monotonic()


def test_a_command_sent_while_dev_seeds_is_answered_once_the_demo_is_there():
    import boto3

    from bot.demo import seed_demo

    port = free_port()
    seeding = threading.Event()
    answers: list[tuple[int, str, float]] = []
    seeded_at: list[float] = []

    def send_meanwhile() -> None:
        seeding.wait(60)
        answers.append(post_command(port, "throttle partner-acme"))

    def seed() -> None:
        seeding.set()
        time.sleep(0.5)  # the command is on its way, into the bound port's backlog
        seed_demo(boto3.session.Session())
        seeded_at.append(time.monotonic())

    sender = threading.Thread(target=send_meanwhile)
    sender.start()
    with LocalPipeline(PipelineOptions(port=port, before_serving=seed, sweep_interval=0.3)) as pipeline:
        sender.join(60)
        ((status, text, answered_at),) = answers
        assert status == 200 and text.startswith("Started `throttle` for `partner-acme`"), text
        assert answered_at > seeded_at[0]
        execution_id = text.split("execution `")[1].split("`")[0]
        # The run finds the seeded table: it gets to the approval of the capacity change.
        ex = pipeline.wait_for(execution_id, {"AWAITING_APPROVAL", "FAILED"}, 60)
        assert ex.status.value == "AWAITING_APPROVAL", ex.error


def test_a_preparation_that_fails_leaves_nothing_listening():
    port = free_port()

    def broken() -> None:
        raise RuntimeError("seeding failed")

    pipeline = LocalPipeline(PipelineOptions(port=port, before_serving=broken))
    with pytest.raises(RuntimeError, match="seeding failed"):
        pipeline.start()
    started = time.monotonic()
    pipeline.stop()  # returns: no ingress loop was waited for
    assert time.monotonic() - started < 30
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again
