"""The guard check (bot/actions/guard.py) against CloudWatch alarms in moto, and the validation of
guard alarm names and patterns."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from bot.actions.base import ActionContext, Tripped
from bot.actions.guard import alarms_in_alarm, guard_pattern_problem, guard_tripped, literal_prefix
from bot.catalog import load_catalog
from tests.alarms import latency_alarm

REGION = "us-east-1"


class Session:
    def __init__(self, **clients: Any) -> None:
        self.clients = clients
        self.made: list[str] = []

    def client(self, service: str) -> Any:
        self.made.append(service)
        return self.clients[service]


def context(session: Any, **kw: Any) -> ActionContext:
    return ActionContext(
        execution_id="rb-guardtest1",
        step_id="replay",
        attempt=1,
        idempotency_key="k",
        partner=load_catalog().partners["partner-acme"],
        aws=session,
        params={},
        checkpoint=None,
        **kw,
    )


@pytest.fixture
def cloudwatch(aws):
    client = boto3.client("cloudwatch", region_name=REGION)
    for name in ("acme-orders-latency", "acme-orders-errors", "acme-users-latency", "globex-latency"):
        latency_alarm(client, name)
    return client


def fire(client: Any, name: str, reason: str = "p99 above 250 ms") -> None:
    client.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason=reason)


def test_nothing_in_alarm_lets_the_step_go_on(cloudwatch):
    ctx = context(Session(cloudwatch=cloudwatch), guard_alarms=("acme-*-latency",))
    assert guard_tripped(ctx) is None


def test_an_alarm_the_pattern_matches_in_alarm_pauses_with_its_reason(cloudwatch):
    fire(cloudwatch, "acme-orders-latency", "Threshold Crossed: 1 datapoint [412.0] > 250.0")
    fire(cloudwatch, "globex-latency")  # another partner's: not matched
    tripped = guard_tripped(context(Session(cloudwatch=cloudwatch), guard_alarms=("acme-*-latency",)))
    assert tripped is not None and tripped.alarms == ("acme-orders-latency",)
    assert tripped.why == (
        "guard alarm acme-orders-latency is in ALARM: Threshold Crossed: 1 datapoint [412.0] > 250.0"
    )


def test_an_exact_name_matches_only_itself(cloudwatch):
    fire(cloudwatch, "acme-orders-errors")
    ctx = context(Session(cloudwatch=cloudwatch), guard_alarms=("acme-orders-latency",))
    assert guard_tripped(ctx) is None
    fire(cloudwatch, "acme-orders-latency")
    assert guard_tripped(ctx).alarms == ("acme-orders-latency",)


def test_several_alarms_are_all_named_and_counted(cloudwatch):
    for name in ("acme-orders-latency", "acme-users-latency", "acme-orders-errors"):
        fire(cloudwatch, name)
    tripped = guard_tripped(
        context(Session(cloudwatch=cloudwatch), guard_alarms=("acme-*-latency", "acme-orders-errors"))
    )
    assert tripped.alarms == ("acme-orders-errors", "acme-orders-latency", "acme-users-latency")
    assert tripped.why.startswith("guard alarm acme-orders-errors is in ALARM (and 2 more)")


def test_alarms_the_approvers_resumed_over_pause_no_more_but_a_new_one_does(cloudwatch):
    fire(cloudwatch, "acme-orders-latency")
    ctx = context(
        Session(cloudwatch=cloudwatch), guard_alarms=("acme-*",), guard_accepted=("acme-orders-latency",)
    )
    assert guard_tripped(ctx) is None
    fire(cloudwatch, "acme-orders-errors")
    tripped = guard_tripped(ctx)
    assert tripped.why.startswith("guard alarm acme-orders-errors is in ALARM")
    assert tripped.alarms == ("acme-orders-errors", "acme-orders-latency")  # all accepted on resume


def test_an_alarm_back_to_ok_lets_the_step_go_on(cloudwatch):
    fire(cloudwatch, "acme-orders-latency")
    ctx = context(Session(cloudwatch=cloudwatch), guard_alarms=("acme-orders-latency",))
    assert guard_tripped(ctx) is not None
    cloudwatch.set_alarm_state(AlarmName="acme-orders-latency", StateValue="OK", StateReason="recovered")
    assert guard_tripped(ctx) is None


class Recorder:
    def __init__(self, pages: list[dict[str, Any]] | None = None, error: Exception | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.pages = pages or [{"MetricAlarms": []}]
        self.error = error

    def describe_alarms(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if self.error:
            raise self.error
        return self.pages[min(len(self.requests), len(self.pages)) - 1]


def test_one_call_per_literal_prefix_with_state_alarm():
    recorder = Recorder()
    alarms_in_alarm(context(Session(cloudwatch=recorder)), ("acme-orders-*", "acme-*-latency", "globex-x"))
    assert [r.get("AlarmNamePrefix") for r in recorder.requests] == ["acme-", "globex-x"]
    assert all(r["StateValue"] == "ALARM" for r in recorder.requests)


def test_a_pattern_without_a_literal_prefix_reads_every_alarm_in_alarm_once():
    recorder = Recorder()
    alarms_in_alarm(context(Session(cloudwatch=recorder)), ("*-latency", "acme-x"))
    assert len(recorder.requests) == 1 and "AlarmNamePrefix" not in recorder.requests[0]


def test_pages_are_followed_and_bounded():
    page = {
        "MetricAlarms": [{"AlarmName": "acme-a", "StateValue": "ALARM", "StateReason": "r"}],
        "NextToken": "t",
    }
    recorder = Recorder([page])
    assert alarms_in_alarm(context(Session(cloudwatch=recorder)), ("acme-*",)) == [("acme-a", "r")]
    assert len(recorder.requests) == 5 and recorder.requests[-1]["NextToken"] == "t"


def test_guard_alarms_that_cannot_be_read_pause_the_step():
    from botocore.exceptions import ClientError

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "DescribeAlarms")
    tripped = guard_tripped(context(Session(cloudwatch=Recorder(error=denied)), guard_alarms=("acme-*",)))
    assert tripped is not None and tripped.alarms == ()
    assert tripped.why.startswith("its guard alarms could not be read (ClientError")
    assert "AccessDenied" in tripped.why


def test_a_pause_the_alarm_handler_asked_for_wins_without_a_call():
    session = Session()
    asked = Tripped("acme-orders-latency entered ALARM (alarm handler)", ("acme-orders-latency",))
    ctx = context(session, pause_requested=lambda: asked)
    assert guard_tripped(ctx).why == "acme-orders-latency entered ALARM (alarm handler)"
    assert session.made == []


def test_an_unguarded_step_makes_no_call():
    session = Session()
    assert guard_tripped(context(session)) is None and session.made == []


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("acme-*-latency", ""),
        ("acme-orders-latency", ""),
        ("*", "matches every alarm in the account"),
        ("*?*", "matches every alarm in the account"),
        ("", "must be a CloudWatch alarm name or an fnmatch pattern"),
        ("   ", "must be a CloudWatch alarm name or an fnmatch pattern"),
        ("a" * 256, "longer than a CloudWatch alarm name may be"),
        ("acme\nlatency", "contains control characters"),
        (7, "must be a CloudWatch alarm name or an fnmatch pattern"),
    ],
)
def test_guard_patterns_are_checked(pattern, problem):
    found = guard_pattern_problem(pattern)
    assert (problem in found) if problem else found == ""


def test_literal_prefix():
    assert literal_prefix("acme-*-latency") == "acme-"
    assert literal_prefix("acme-orders") == "acme-orders"
    assert literal_prefix("[ab]cme") == ""
