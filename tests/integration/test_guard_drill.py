"""A drill that injects a guard alarm (`faults=guard=1`): the replay pauses, the drill's approver
resumes it, and the verdict reports the pause."""

from __future__ import annotations

import pytest

from bot.store.model import Status

pytestmark = pytest.mark.integration


def test_a_drill_with_an_injected_guard_alarm_pauses_and_its_verdict_says_so():
    from bot.drills.local import run_local_drill

    result = run_local_drill("replay", "partner-acme", faults="guard=1")
    report = result.report
    assert report.status is Status.SUCCEEDED, report.lines()
    assert report.guard_injected and report.guard_expected and report.guard_pauses == 1, report.lines()
    assert report.passed and "a guard alarm paused the run once" in report.summary()
