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

    seeding = threading.Event()
    answers: list[tuple[int, str, float]] = []
    seeded_at: list[float] = []

    def send_meanwhile() -> None:
        seeding.wait(60)
        answers.append(post_command(pipeline.ingress.port, "throttle partner-acme"))

    def seed() -> None:
        seeding.set()
        time.sleep(0.5)  # the command is on its way, into the bound port's backlog
        seed_demo(boto3.session.Session())
        seeded_at.append(time.monotonic())

    # Any free port, read once bound: a port chosen up front can be taken meanwhile (CI once saw
    # EADDRINUSE), and a connection to a port nobody listens on yet can even take it itself.
    pipeline = LocalPipeline(PipelineOptions(port=0, before_serving=seed, sweep_interval=0.3))
    sender = threading.Thread(target=send_meanwhile)
    sender.start()
    with pipeline:
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


def test_a_start_that_fails_stops_what_it_started_and_puts_the_environment_back():
    """CI once lost the ingress port mid-start: the stream pollers and the sweeper it had started
    kept running into later tests, logging failures against a table long gone."""
    import os
    import socket

    before = {t.ident for t in threading.enumerate()}
    env_before = dict(os.environ)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        pipeline = LocalPipeline(PipelineOptions(port=holder.getsockname()[1]))
        with pytest.raises(OSError):
            pipeline.start()
    # The port was checked first: nothing else was started, so nothing is left.
    assert pipeline.aws is None and pipeline.slack is None
    assert dict(os.environ) == env_before

    def broken() -> None:
        raise RuntimeError("seeding failed")

    pipeline = LocalPipeline(PipelineOptions(before_serving=broken))
    with pytest.raises(RuntimeError, match="seeding failed"):
        pipeline.start()  # no stop(): the failed start has stopped everything itself
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not left:
            break
        time.sleep(0.1)
    assert left == []
    assert dict(os.environ) == env_before
