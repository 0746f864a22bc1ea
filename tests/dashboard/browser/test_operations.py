"""The operator's actions in a browser: release a held message, retry a failing delivery, replay a policy.

Each ends where the operator's intent does: the released message and the retried delivery
arrive at the agent's real webhook receiver, the replay's report is on the page.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.dashboard.browser.operator import Operator
from tests.dashboard.browser.stack import ADMIN_TOKEN, AGENT, Stack
from tests.delivery.receiver import Answer

pytestmark = pytest.mark.browser

LETS_HELD_IN = """defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
[[senders]]
match = { domain = "held.example" }
"""


def test_a_released_message_is_delivered_to_the_agents_webhook(operator: Operator, stack: Stack) -> None:
    assert stack.send("hal@held.example", "Please review me", "The contract, as discussed.\r\n") == 250
    page = operator.login(ADMIN_TOKEN)
    operator.visit("/ui/quarantine", "quarantine")
    held = page.locator("tr.held")
    expect(held).to_have_count(1)
    operator.submit(held.first.locator("a.read"), "the held message")
    expect(page.locator("#held-reason")).to_have_text("quarantined_by_rule")
    expect(page.locator("#message-text")).to_contain_text("The contract, as discussed.")
    [notice] = stack.receiver.wait_for(1, timeout=15)  # held: the agent hears of it, without its content
    assert json.loads(notice.body)["type"] == "message.quarantined"
    assert "The contract" not in notice.body.decode()
    operator.submit(page.locator("#release"), "released")
    expect(page.locator("#outcome")).to_contain_text("Released")
    expect(page.locator("tr.held")).to_have_count(0)
    arrived = stack.receiver.wait_for(2, timeout=15)
    event = json.loads(arrived[1].body)
    assert event["type"] == "message.received"
    assert event["data"]["subject"] == "Please review me" and event["data"]["agent"] == AGENT
    assert "The contract, as discussed." in event["data"]["text"]


def test_a_failing_delivery_is_retried_from_the_page_and_delivered(operator: Operator, stack: Stack) -> None:
    # Attempts 1 (at once) and 2 (5 s later) fail; attempt 3 would be 5 minutes away: "Retry now" sends it.
    stack.switchboard.answer_next(Answer(status=500), Answer(status=500))
    assert stack.send("ann@example.net", "Will be retried") == 250
    stack.receiver.wait_for(2, timeout=20)
    page = operator.login(ADMIN_TOKEN)
    row = page.locator('tr.delivery[data-status="pending"]')
    for _ in range(50):  # the second failure is recorded just after the receiver answered it
        operator.visit("/ui/deliveries", "deliveries needing attention")
        if row.count() == 1 and "HTTP 500" in row.inner_text() and " 2 " in f" {row.locator('td.num').inner_text()} ":
            break
    expect(row).to_have_count(1)
    expect(row).to_contain_text("HTTP 500")
    delivery_id = row.get_attribute("data-delivery-id")
    operator.submit(row.locator("a").first, "the failing delivery")
    expect(page.locator("tr.attempt")).to_have_count(2)
    operator.submit(page.locator(f"[id='retry-{delivery_id}']"), "retried")
    expect(page.locator("#outcome")).to_contain_text("attempted now")
    arrived = stack.receiver.wait_for(3, timeout=15)
    assert [r.headers["webhook-id"] for r in arrived] == [delivery_id] * 3
    for _ in range(50):  # the delivered attempt is recorded just after the receiver answered it
        operator.visit(f"/ui/deliveries/{delivery_id}", "the delivered delivery")
        if page.locator("#delivery-status").inner_text() == "delivered":
            break
    expect(page.locator("#delivery-status")).to_have_text("delivered")
    expect(page.locator("tr.attempt")).to_have_count(3)


def test_a_replay_reports_what_a_candidate_policy_would_change(operator: Operator, stack: Stack) -> None:
    assert stack.send("ann@example.net", "Accepted") == 250
    assert stack.send("hal@held.example", "Held") == 250
    page = operator.login(ADMIN_TOKEN)
    operator.visit("/ui/replay", "replay form")
    page.locator("#replay-agent").select_option(AGENT)
    page.locator("#replay-since").fill("1h")
    page.locator("#replay-text").fill(LETS_HELD_IN)
    operator.submit(page.locator("#replay-submit"), "replay report")
    expect(page.locator("#replay-summary")).to_contain_text("2 decision(s): 2 replayed, 1 unchanged, 1 changed")
    flip = page.locator("tr.flip")
    expect(flip).to_have_count(1)
    expect(flip).to_have_attribute("data-kind", "now_accepted")
    expect(flip).to_contain_text("hal@held.example")
