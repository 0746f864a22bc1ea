"""Logging in, the Overview's charts, every page of the bar, filtering decisions and reading a trace."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.dashboard.browser.operator import Operator
from tests.dashboard.browser.stack import ADMIN_TOKEN, Stack

pytestmark = pytest.mark.browser

PAGES = ("decisions", "quarantine", "deliveries", "domains", "policies", "replay")


def test_after_login_the_overview_shows_its_chart_and_every_page_of_the_bar_opens(
        operator: Operator, stack: Stack) -> None:
    assert stack.send("ann@example.net", "Lunch on Thursday?") == 250
    assert stack.send("zed@stranger.example", "Buy now") == 550
    page = operator.login(ADMIN_TOKEN)
    assert page.url.endswith("/ui/")
    chart = page.locator("#decisions-per-hour svg")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["height"] > 50  # drawn, not an empty element
    expect(page.locator("#top-senders")).to_contain_text("ann@example.net")
    for key in PAGES:
        operator.submit(page.locator(f"#nav-{key}"), key)
        expect(page.locator(f"#nav-{key}")).to_have_attribute("aria-current", "page")
        expect(page.locator("h1")).to_be_visible()


def test_decisions_are_filtered_by_action_and_one_opens_with_its_trace(operator: Operator, stack: Stack) -> None:
    assert stack.send("ann@example.net", "Agenda") == 250
    assert stack.send("zed@stranger.example", "Offer") == 550
    page = operator.login(ADMIN_TOKEN)
    operator.visit("/ui/decisions", "decisions")
    expect(page.locator("tr.decision")).to_have_count(2)
    page.locator("#filter-action").select_option("bounce")
    operator.submit(page.locator("#filter-submit"), "decisions filtered to bounce")
    rows = page.locator("tr.decision")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("zed@stranger.example")
    operator.submit(rows.first.locator("a").first, "the bounced decision")
    expect(page.locator("#decision-action")).to_have_text("bounce")
    expect(page.locator("#decision-reason")).to_have_text("sender_not_allowed")
    sender_step = page.locator('#trace tr.trace-step[data-step="sender"]')
    expect(sender_step).to_be_visible()
    expect(sender_step).to_contain_text("no match")
