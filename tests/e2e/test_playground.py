"""The playground in headless Chromium: a throttle run end to end with approvals, as a person would.

Debian's Chromium (`make chromium`), driven by Playwright's Python package; no browser download.
The screenshot lands in `test-results/playground-throttle.png`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def playground() -> Iterator[Any]:
    import boto3

    from bot.demo import seed_demo
    from bot.local.pipeline import LocalPipeline, PipelineOptions
    from bot.local.playground import Playground

    with LocalPipeline(PipelineOptions(engine="moto", sweep_interval=0.5)) as pipeline:
        seed_demo(boto3.session.Session())
        site = Playground(pipeline).start()
        try:
            yield site
        finally:
            site.stop()


@pytest.fixture
def page(playground) -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: run `make chromium` (Debian's package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: dialog.accept())  # the approve button asks to confirm
        page.goto(playground.url)
        try:
            yield page
        finally:
            browser.close()


def approve_as(page: Any, user: str) -> None:
    page.select_option("#user", user)
    page.locator('button[data-action="approve"]').last.click()


def test_throttle_runs_in_the_browser_with_a_refused_self_approval_then_an_approver(page, playground):
    from playwright.sync_api import expect

    page.select_option("#user", "U0DEVONCALL")
    page.fill("#text", "/runbook throttle partner-acme")
    page.click("#composer button[type=submit]")
    expect(page.locator("#ephemeral")).to_contain_text("Started throttle for partner-acme", timeout=15_000)

    approve = page.locator('button[data-action="approve"]')
    expect(approve.first).to_be_visible(timeout=30_000)
    approve_as(page, "U0DEVONCALL")  # the requester: refused, told why, only them
    expect(page.locator("#ephemeral")).to_contain_text("you started this run", timeout=15_000)

    approve_as(page, "U0ACMELEAD")  # the capacity change
    expect(page.locator(".msg").first).to_contain_text(
        "Replay throttled writes", timeout=30_000
    )  # by its title
    expect(page.locator("#messages")).to_contain_text("approved", timeout=30_000)
    # The replay's own approval message, with what it will write and at what rate.
    expect(page.locator("#messages")).to_contain_text("missed writes", timeout=30_000)
    approve_as(page, "U0ACMESRE")

    expect(page.locator(".msg").first).to_contain_text("SUCCEEDED", timeout=90_000)
    expect(page.locator('button[data-action="approve"]')).to_have_count(0)

    # The bot's own metrics, under the dashboard's names, from the EMF lines the functions logged.
    def figure(metric: str, dimensions: str, stat: str) -> Any:
        row = page.locator(f'#metrics [data-metric="{metric}"] tr[data-dimensions*="{dimensions}"]')
        return row.locator(f'td[data-stat="{stat}"]')

    expect(figure("RunsStarted", "trigger=slash", "Sum")).to_have_text("1", timeout=15_000)
    expect(figure("RunsEnded", "status=SUCCEEDED", "Sum")).to_have_text("1", timeout=15_000)
    expect(figure("ApprovalWait", "decision=approved", "SampleCount")).to_have_text("2")
    for action in ("cloudwatch.metrics", "dynamodb.replay"):
        expect(figure("StepDuration", f"action={action}", "p99")).to_have_text(re.compile(r"^\d"))
    expect(page.locator('#metrics [data-metric="StreamRecordAge"] tr[data-dimensions]')).to_have_count(2)
    expect(page.locator("#metrics-meta")).to_contain_text("RunbookBot · since ")
    panel = playground.metrics()
    assert sum(s["statistics"]["Sum"] for s in panel["series"] if s["name"] == "RunsEnded") == 1
    assert panel["summary"][0].startswith("metrics since ")
    for selector in ("#composer", "#user", "#health"):
        assert in_viewport(page, selector), f"{selector} scrolled out of view"
    out = REPO / "test-results"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "playground-throttle.png"), full_page=True)


def test_a_rejection_asks_for_a_reason_in_a_modal_that_shows_errors_under_its_field(page):
    import re

    from playwright.sync_api import expect

    page.select_option("#user", "U0DEVONCALL")
    page.fill("#text", "/runbook drill throttle partner-acme")  # its own tables: the run above is untouched
    page.click("#composer button[type=submit]")
    started = page.locator(".eph", has_text="execution")
    expect(started.last).to_contain_text("drill", timeout=15_000)
    execution_id = re.search(r"rb-[a-z0-9]{10}", started.last.inner_text()).group(0)
    reject = page.locator(f'button[data-action="reject"][data-value*="{execution_id}"]')
    expect(reject.first).to_be_visible(timeout=60_000)

    page.select_option("#user", "U0ACMELEAD")
    reject.last.click()
    modal = page.locator("#modal .dialog")
    expect(modal).to_be_visible(timeout=15_000)
    expect(modal.locator("h3")).to_have_text("Reject this step")
    modal.locator('[data-modal="submit"]').click()  # no reason: Slack shows the bot's error under the field
    expect(modal.locator(".field-error")).to_contain_text("Say why you reject this step", timeout=15_000)
    modal.locator('textarea[data-block="note"]').fill("drill: the partner asked us to hold")
    modal.locator('[data-modal="submit"]').click()
    expect(page.locator("#modal")).to_be_hidden(timeout=15_000)
    expect(page.locator("#messages")).to_contain_text(
        "rejected: drill: the partner asked us to hold", timeout=30_000
    )
    out = REPO / "test-results"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "playground-reject-reason.png"), full_page=True)

    page.select_option("#user", "U0DEVONCALL")  # its rollback may wait for approval: end it
    page.fill("#text", f"/runbook cancel {execution_id}")
    page.click("#composer button[type=submit]")
    expect(page.locator("#ephemeral")).to_contain_text(f"cancel {execution_id}", timeout=15_000)


def test_the_start_form_opens_updates_shows_a_field_error_and_starts_the_run(page, playground):
    """`/runbook` alone: the form opens; picking throttle, then partner-acme, updates it
    (block_actions -> views.update); a value above the partner's limit comes back under its
    field; fixed, the run starts in the channel and the form closes."""
    from playwright.sync_api import expect

    page.select_option("#user", "U0ACMESRE")
    page.fill("#text", "/runbook")
    page.click("#composer button[type=submit]")
    modal = page.locator("#modal .dialog")
    expect(modal).to_be_visible(timeout=15_000)
    expect(modal.locator("h3")).to_have_text("Start a runbook")
    modal.locator('select[data-block="start_runbook"]').select_option("throttle")
    partner = modal.locator('select[data-block="start_partner"]')
    expect(partner).to_be_visible(timeout=15_000)
    expect(partner.locator("option")).to_have_count(2)  # "Choose" and the one partner allowed here
    partner.select_option("partner-acme")
    units = modal.locator('input[data-block="param.throttle.partner-acme.write_units"]')
    expect(units).to_have_value("200", timeout=15_000)  # the default, as the initial value
    expect(units).to_have_attribute("max", "2000")  # the partner's capacity limit
    expect(modal).to_contain_text("Needs an approver")
    units.fill("5000")
    modal.locator('[data-modal="submit"]').click()
    expect(modal.locator(".field-error")).to_contain_text("above partner-acme's limit", timeout=15_000)
    units.fill("300")
    modal.locator('[data-modal="submit"]').click()
    expect(page.locator("#modal")).to_be_hidden(timeout=15_000)
    # The first test's throttle run has ended: the orders table is free, the run starts.
    expect(page.locator("#ephemeral")).to_contain_text("Started throttle for partner-acme", timeout=15_000)
    out = REPO / "test-results"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "playground-start-form.png"), full_page=True)

    # It waits for approval on the orders table: end it, so the alarm test below can start one.
    started = page.locator(".eph", has_text="Started throttle for partner-acme")
    execution_id = re.search(r"rb-[a-z0-9]{10}", started.last.inner_text()).group(0)
    page.fill("#text", f"/runbook cancel {execution_id}")
    page.click("#composer button[type=submit]")
    expect(page.locator("#ephemeral")).to_contain_text(f"cancel {execution_id}", timeout=15_000)
    ended = playground.pipeline.wait_for(execution_id, {"CANCELLED", "SUCCEEDED", "FAILED"}, 60)
    assert ended.status.value == "CANCELLED"


def in_viewport(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def test_the_message_pane_scrolls_with_the_composer_and_user_switcher_always_in_view(page, playground):
    from playwright.sync_api import expect

    slack = playground.pipeline.slack
    for i in range(120):  # a long channel: the page grew to 9,760 px with far fewer
        slack.say("C0ACMEOPS", f"filler {i}: how is the replay going?", user="U0ACMESRE")
    newest = page.locator(".msg", has_text="filler 119:")
    expect(newest).to_be_in_viewport(timeout=10_000)  # new messages scroll into view

    assert page.evaluate("document.scrollingElement.scrollHeight") <= page.viewport_size["height"]
    for selector in ("#composer", "#text", "#user", "#fire", "#title"):
        assert in_viewport(page, selector), f"{selector} scrolled out of view"
    pane = page.evaluate(
        "(() => { const m = document.getElementById('messages'); return [m.scrollHeight, m.clientHeight]; })()"
    )
    assert pane[0] > 3 * pane[1]  # the pane holds the channel and scrolls

    # Scrolled up to read: a new message waits behind "New messages" instead of pulling the pane.
    page.locator(".msg", has_text="filler 0:").scroll_into_view_if_needed()
    expect(page.locator(".msg", has_text="filler 0:")).to_be_in_viewport()
    slack.say("C0ACMEOPS", "posted while you read", user="U0ACMELEAD")
    expect(page.locator("#jump")).to_be_visible(timeout=10_000)
    expect(page.locator(".msg", has_text="filler 0:")).to_be_in_viewport()
    page.click("#jump")
    expect(page.locator(".msg", has_text="posted while you read")).to_be_in_viewport()
    expect(page.locator("#jump")).to_be_hidden()

    # Sending a command follows the channel again, and the composer is still where it was.
    page.fill("#text", "/runbook help")
    page.click("#composer button[type=submit]")
    expect(page.locator("#ephemeral")).to_contain_text("answer to /runbook help", timeout=15_000)
    for selector in ("#composer", "#user"):
        assert in_viewport(page, selector), f"{selector} scrolled out of view"
    expect(page.locator(".msg", has_text="posted while you read")).to_be_in_viewport()
    out = REPO / "test-results"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "playground-long-channel.png"))


def test_a_second_fire_alarm_says_why_nothing_started(page):

    from playwright.sync_api import expect

    page.fill("#alarm", "no-partner-maps-this-alarm")
    page.click("#fire")
    expect(page.locator("#ephemeral")).to_contain_text("matches no partner's alarms pattern: nothing started")

    page.fill("#alarm", "acme-orders-WriteThrottleEvents")
    page.click("#fire")
    started = page.locator(".eph", has_text="started throttle for partner-acme: execution")
    expect(started).to_be_visible(timeout=15_000)
    execution_id = re.search(r"rb-[a-z0-9]{10}", started.inner_text()).group(0)

    page.click("#fire")
    expect(page.locator("#ephemeral")).to_contain_text(
        f"nothing started. throttle for partner-acme is already running as {execution_id}", timeout=15_000
    )
    out = REPO / "test-results"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "playground-second-alarm.png"))


def test_the_app_home_shows_a_waiting_approval_approves_from_there_and_starts_the_form(page, playground):
    """The App Home tab: opening it delivers app_home_opened; the home the timeline consumer
    publishes lists the run waiting for this approver, whose Approve decides it (the home then
    refreshes without it); the requester's home has no button for it; Start opens the form."""
    from playwright.sync_api import expect

    # An approver starts it past any run a test above left on the table; another approver decides.
    page.select_option("#user", "U0ACMELEAD")
    page.click('[data-channel="C0ACMEOPS"]')
    page.fill("#text", "/runbook throttle partner-acme force=true")
    page.click("#composer button[type=submit]")
    started = page.locator(".eph", has_text="Started throttle for partner-acme")
    expect(started.last).to_be_visible(timeout=15_000)
    execution_id = re.search(r"rb-[a-z0-9]{10}", started.last.inner_text()).group(0)
    playground.pipeline.wait_for(execution_id, {"AWAITING_APPROVAL"}, 60)

    page.select_option("#user", "U0ACMESRE")
    page.click("#home-tab")
    home = page.locator("#home")
    expect(home).to_contain_text("Waiting for your approval", timeout=30_000)
    mine = home.locator(f'button[data-action="approve"][data-value*="{execution_id}"]')
    expect(mine).to_be_visible(timeout=30_000)
    out = REPO / "test-results"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "playground-app-home.png"), full_page=True)
    value = mine.first.get_attribute("data-value")
    mine.first.click()  # the confirm dialog is accepted
    decided = home.locator(f"button[data-action='approve'][data-value='{value}']")
    expect(decided).to_have_count(0, timeout=30_000)  # the refreshed home no longer offers it
    step = json.loads(value)["step_id"]
    assert step in playground.pipeline.execution(execution_id).approved_steps

    page.select_option("#user", "U0ACMELEAD")  # the requester: their run, no button to decide it
    expect(home).to_contain_text(execution_id, timeout=30_000)
    expect(home.locator(f'button[data-action="approve"][data-value*="{execution_id}"]')).to_have_count(0)

    home.locator('button[data-action="home_start"]').click()
    modal = page.locator("#modal .dialog")
    expect(modal).to_be_visible(timeout=15_000)
    expect(modal.locator("h3")).to_have_text("Start a runbook")
    modal.locator('[data-modal="close"]').click()
    expect(page.locator("#modal")).to_be_hidden(timeout=15_000)
    assert "Cancelling" in playground.command(f"cancel {execution_id}", "U0ACMELEAD", "C0ACMEOPS")["text"]


def test_history_pages_with_more_and_an_ended_run_exports_its_evidence(page, playground, monkeypatch):
    from playwright.sync_api import expect

    from bot.slack import history

    monkeypatch.setattr(history, "PAGE_SIZE", 1)  # two runs make a second page
    page.select_option("#user", "U0ACMESRE")
    page.click('[data-channel="C0ACMEOPS"]')
    for i in range(2):  # read-only, no approval: they end by themselves
        page.fill("#text", "/runbook consistency partner-acme sample=20")
        page.click("#composer button[type=submit]")
        started = page.locator(".eph", has_text="Started consistency for partner-acme")
        expect(started).to_have_count(i + 1, timeout=15_000)
        execution_id = re.search(r"rb-[a-z0-9]{10}", started.last.inner_text()).group(0)
        playground.pipeline.wait_for(execution_id, {"SUCCEEDED", "FAILED"}, 60)
    page.fill("#text", "/runbook history partner-acme since=1h")
    page.click("#composer button[type=submit]")
    more = page.locator('#ephemeral button[data-action="history_more"]')
    expect(more.first).to_be_visible(timeout=15_000)
    before = page.locator("#ephemeral .eph").count()
    more.first.click()
    expect(page.locator("#ephemeral .eph")).to_have_count(
        before + 1, timeout=15_000
    )  # the next page, to them alone
    first_run = re.search(r"rb-[a-z0-9]{10}", page.locator("#ephemeral .eph").nth(before - 1).inner_text())
    second_run = re.search(r"rb-[a-z0-9]{10}", page.locator("#ephemeral .eph").nth(before).inner_text())
    assert first_run and second_run and first_run.group(0) != second_run.group(0)

    export = page.locator('#messages button[data-action="export_evidence"]')
    expect(export.first).to_be_visible(timeout=60_000)
    export.first.click()
    expect(page.locator("#ephemeral")).to_contain_text("evidence", timeout=15_000)
    slack = playground.pipeline.slack
    assert slack.wait_for(lambda: any(u.shared_in for u in slack.files.values()), 30), (
        "uploaded to the thread"
    )
