"""The local stack's console: each timeline event once, from real stream records, one line each."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from bot.cli import Console, _plain
from bot.local.slack_requests import block_actions_body, http_api_event, signed_headers, slash_command_body
from bot.store.codec import to_item
from bot.store.model import EventKind, Execution, Status, TimelineEvent

T = 1_795_000_000_000


def execution(*events: tuple[str, ...]) -> Execution:
    return Execution(
        execution_id="rb-consoletst",
        runbook="throttle",
        runbook_version="v1",
        partner="partner-acme",
        status=Status.RUNNING,
        version=len(events),
        params={},
        requested_by="U0DEVONCALL",
        channel="C0ACMEOPS",
        created_at_ms=T,
        updated_at_ms=T,
        timeline=tuple(
            TimelineEvent(
                i, T + i * 1000, EventKind(e[0]), e[2], step_id=e[1], actor=e[3] if len(e) > 3 else ""
            )
            for i, e in enumerate(events, start=1)
        ),
    )


def stream_record(ex: Execution) -> dict:
    return {"eventName": "MODIFY", "dynamodb": {"NewImage": to_item(ex), "SequenceNumber": str(ex.version)}}


@pytest.fixture
def console(tmp_path: Path) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(tmp_path / "log", out=out), out


STARTED = (EventKind.RUN_STARTED, "", "Throttled requests: run started by <@U0DEVONCALL> for partner-acme")
DETECTED = (EventKind.STEP_FINISHED, "detect", "acme-orders: throttled for 8 of the last 15 minutes")
ASKED = (EventKind.APPROVAL_REQUESTED, "mitigate", "needs approval: acme-orders &lt;100 WCU&gt; to on-demand")
GRANTED = (EventKind.APPROVAL_GRANTED, "mitigate", "approved", "U0ACMELEAD")


def test_each_timeline_event_prints_once_though_both_consumers_see_it_and_records_come_again(console):
    screen, out = console
    first = stream_record(execution(STARTED))
    second = stream_record(execution(STARTED, DETECTED, ASKED, GRANTED))

    screen.observe("WorkerFunction", [first])
    screen.observe("TimelineFunction", [first, second])
    screen.observe("WorkerFunction", [second, first])  # a redelivered batch, an older image

    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "rb-consoletst run started: Throttled requests: run started by @U0DEVONCALL for partner-acme",
        "rb-consoletst step finished detect: acme-orders: throttled for 8 of the last 15 minutes",
        "rb-consoletst approval requested mitigate: needs approval: acme-orders <100 WCU> to on-demand",
        "rb-consoletst approval granted mitigate: approved (by @U0ACMELEAD)",
    ]


def test_records_of_other_items_and_unreadable_records_never_fail_a_batch(console, caplog):
    screen, out = console
    other = {"eventName": "INSERT", "dynamodb": {"NewImage": {"pk": {"S": "TABLE#x"}, "sk": {"S": "LOCK"}}}}
    broken = {"dynamodb": {"NewImage": {"execution_id": {"S": "rb-x"}, "timeline": {"Q": "?"}}}}

    with caplog.at_level(logging.ERROR, logger="bot.cli"):
        screen.observe("TimelineFunction", [other, broken])

    assert out.getvalue() == ""
    assert "cannot print the events" in caplog.text


def test_a_command_and_its_answer_are_one_line_and_a_refused_click_says_its_status(console):
    screen, out = console
    body = slash_command_body("throttle partner-acme", user_id="U0DEVONCALL", channel_id="C0ACMEOPS")
    answer = {"statusCode": 200, "body": json.dumps({"text": "Started `throttle`:\nexecution `rb-1`"})}
    click = block_actions_body("approve", "{}", user_id="U0STRANGER", channel_id="C0ACMEOPS")

    screen.answered(http_api_event(body, signed_headers("s", body), base64_body=True), answer)
    screen.answered(http_api_event(click, {}), {"statusCode": 200, "body": ""})  # decisions: on the timeline
    screen.answered(http_api_event(click, {}), {"statusCode": 401, "body": ""})

    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "/runbook throttle partner-acme (U0DEVONCALL in C0ACMEOPS) → Started `throttle`: execution `rb-1`",
        "button click → HTTP 401",
    ]


@pytest.mark.parametrize(
    ("mrkdwn", "plain"),
    [
        ("by <@U0ACMELEAD>", "by @U0ACMELEAD"),
        ("ask <!subteam^S0ACMEONCALL|@acme-oncall>", "ask @acme-oncall"),
        ("ask <!subteam^S0ACMEONCALL>", "ask @S0ACMEONCALL"),
        ("<!channel> look", "@channel look"),
        ("see <https://example.com/x|the runbook>", "see the runbook"),
        ("in <#C0ACMEOPS>", "in #C0ACMEOPS"),
        ("&lt;@U0X&gt; &amp; co", "<@U0X> & co"),
        ("two\nlines  and   spaces", "two lines and spaces"),
    ],
)
def test_slack_markup_reads_as_plain_text(mrkdwn, plain):
    assert _plain(mrkdwn) == plain


def test_the_functions_logs_go_to_the_file_and_their_errors_to_the_console_as_one_line(tmp_path):
    from aws_lambda_powertools import Logger

    out = io.StringIO()
    screen = Console(tmp_path / "dev.log", out=out)

    def session() -> None:
        # Created once the console runs, as the pipeline's functions are.
        function_logger = Logger(service="console-test-function", level="INFO")
        screen.adopt_function_loggers()
        function_logger.info("a structured line")
        try:
            raise ValueError("the table is gone\nand more")
        except ValueError:
            function_logger.exception("batch failed")
        logging.getLogger("moto.server").error("a library's own error")
        logging.getLogger("bot.local.streams").warning("stream delivery to %s failed; retrying", "Worker")

    assert screen.run("dev", session) == 0

    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        f"error: batch failed (ValueError: the table is gone; traceback in {tmp_path / 'dev.log'})",
        "warning: stream delivery to Worker failed; retrying",
    ]
    log = (tmp_path / "dev.log").read_text()
    assert '"message":"a structured line"' in log and "Traceback" in log and "a library's own error" in log
    # Put back as they were: the function's logger writes where it wrote before.
    assert logging.getLogger("console-test-function").propagate is True


# -- the bot's metrics on the console --------------------------------------------------------------


def emf_line(kind: str) -> str:
    from bot import metrics

    return metrics.to_line(metrics.emf_document(metrics.SLACK_ERRORS, 1, {"kind": kind}))


def summaries_of(console, every: float):
    from bot.cli import MetricsSummaries
    from bot.local.emf import EmfAggregator

    screen, out = console
    aggregator = EmfAggregator()
    return MetricsSummaries(screen, aggregator, every), aggregator, out


def test_the_periodic_summary_prints_only_when_something_was_recorded_since_the_last(console):
    summaries, aggregator, out = summaries_of(console, every=30)
    summaries.print_summary(only_if_changed=True)
    assert out.getvalue() == ""  # nothing recorded: nothing said
    aggregator.observe(emf_line("ratelimited"))
    summaries.print_summary(only_if_changed=True)
    first = out.getvalue().splitlines()
    assert len(first) == 2
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d metrics since \d\d:\d\d:\d\d: 1 EMF document in RunbookBot", first[0]
    )
    assert first[1] == "  SlackErrors (kind) 1: ratelimited 1"
    summaries.print_summary(only_if_changed=True)
    assert out.getvalue().splitlines() == first  # unchanged: not printed again
    aggregator.observe('{"level":"INFO","message":"an ordinary log line"}')
    summaries.print_summary(only_if_changed=True)
    assert out.getvalue().splitlines() == first


def test_asking_prints_the_summary_at_once_and_stopping_prints_the_last(console):
    import time

    summaries, aggregator, out = summaries_of(console, every=0)  # 0: never on its own
    summaries.start()
    try:
        aggregator.observe(emf_line("ratelimited"))
        summaries.ask()
        deadline = time.monotonic() + 5
        while "SlackErrors" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "  SlackErrors (kind) 1: ratelimited 1" in out.getvalue().splitlines()
        aggregator.observe(emf_line("http_5xx"))
    finally:
        summaries.stop()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "  SlackErrors (kind) 2: http_5xx 1, ratelimited 1"
    assert sum("metrics since" in line for line in lines) == 2


def test_the_summary_on_its_timer_and_nothing_at_the_end_of_a_silent_session(console):
    import time

    summaries, aggregator, out = summaries_of(console, every=0.05)
    summaries.start()
    time.sleep(0.2)
    assert out.getvalue() == ""  # nothing recorded: the timer stays quiet
    aggregator.observe(emf_line("ratelimited"))
    deadline = time.monotonic() + 5
    while "SlackErrors" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # several more ticks: no change, no repeat
    assert out.getvalue().count("metrics since") == 1
    summaries.stop()
    silent, _, quiet = summaries_of(console, every=0.05)
    silent.start()
    silent.stop()
    assert quiet.getvalue().count("metrics since") == 2  # the first session's last summary only


@pytest.mark.parametrize(
    ("text", "message"),
    [("soon", "not a number of seconds"), ("-1", "between 0 and 86400"), ("nan", "between 0 and 86400")],
)
def test_a_bad_summary_interval_says_what_is_valid(text, message, capsys):
    from bot.cli import main

    with pytest.raises(SystemExit):
        main(["dev", "--metrics-every", text])
    assert message in capsys.readouterr().err
