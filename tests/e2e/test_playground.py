"""The playground in headless Chromium: a throttle run end to end with approvals, as a person would.

Debian's Chromium (`make chromium`), driven by Playwright's Python package; no browser download.
The screenshot lands in `test-results/playground-throttle.png`.
"""

from __future__ import annotations

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


def test_throttle_runs_in_the_browser_with_a_refused_self_approval_then_an_approver(page):
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
    expect(page.locator(".msg").first).to_contain_text("replay", timeout=30_000)
    expect(page.locator("#messages")).to_contain_text("approved", timeout=30_000)
    # The replay's own approval message, with what it will write and at what rate.
    expect(page.locator("#messages")).to_contain_text("missed writes", timeout=30_000)
    approve_as(page, "U0ACMESRE")

    expect(page.locator(".msg").first).to_contain_text("SUCCEEDED", timeout=90_000)
    expect(page.locator('button[data-action="approve"]')).to_have_count(0)
    out = REPO / "test-results"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "playground-throttle.png"), full_page=True)
