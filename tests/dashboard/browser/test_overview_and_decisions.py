"""Logging in, the Overview's charts, every page of the bar, filtering decisions and reading a trace."""

from __future__ import annotations

import httpx
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


def test_a_domain_shows_each_record_to_publish_and_after_a_check_what_to_fix(operator: Operator, stack: Stack) -> None:
    added = httpx.post(f"{stack.base_url}/api/v1/domains", json={"domain": "example.test"},
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    assert added.status_code == 201, added.text
    page = operator.login(ADMIN_TOKEN)
    operator.visit("/ui/domains", "domains")
    operator.submit(page.locator('tr.domain[data-domain="example.test"] a'), "the domain, unchecked")
    records = page.locator("tr.record")
    expect(records.first).to_have_attribute("data-state", "unchecked")
    operator.submit(page.locator("#check-now"), "the domain, checked")
    expect(page.locator("#domain-verdict")).to_have_text("Some records need fixing")  # its DNS knows no name
    missing = page.locator('tr.record[data-state="missing"]')
    assert missing.count() == records.count() > 3
    expect(missing.first.locator("td.fix")).not_to_be_empty()


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
