"""A message whose HTML carries script runs none of it in the dashboard, wherever it is shown.

The same HTML is first loaded into a bare page with no protection, where its script does run
(sets a global, retitles the page, calls the test's probe server): so the payload is live, and
its absence in the dashboard means the dashboard stopped it. Then the decision page and the
quarantine page show the message: the top page and the message's frame are checked for every
effect, and the probe must have received no request at all.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Frame, Page, expect

from tests.dashboard.browser.operator import Operator
from tests.dashboard.browser.stack import ADMIN_TOKEN, Probe, Stack

pytestmark = pytest.mark.browser

MARK = "pwned"


def payload(probe: str) -> str:
    """Inline script, an onerror handler, a javascript: link, an SVG onload and a remote image, each of which
    would set ``window.__pwned``, retitle the page (its own and its parent's) and call ``probe``."""
    act = (f"window.__pwned=(window.__pwned||0)+1;document.title='{MARK}';"
           f"try{{parent.document.title='{MARK}'}}catch(e){{}};fetch('{probe}/%s',{{mode:'no-cors'}})")
    return (f"<p id='greeting'>Quarterly figures inside</p>"
            f"<script>{act % 'script'}</script>"
            f"<img src='x-broken' onerror=\"{act % 'onerror'}\">"
            f"<svg onload=\"{act % 'svg'}\"><rect width='1' height='1'/></svg>"
            f"<a id='jslink' href=\"javascript:{act % 'link'}\">open the figures</a>"
            f"<img src='{probe}/pixel.gif'>")


def nothing_ran(page: Page, title: str) -> None:
    """No effect of the payload on the top page."""
    assert page.title() == title
    assert page.evaluate("window.__pwned") is None


def message_frame(page: Page) -> Frame:
    """The message's frame, once its HTML is shown (the sanitizer keeps the text, not the ids)."""
    expect(page.frame_locator("#message-html").get_by_text("Quarterly figures inside")).to_be_visible()
    return next(f for f in page.frames if f.url.endswith("/html"))


def frame_ran_nothing(frame: Frame) -> None:
    """No effect of the payload inside the message's frame."""
    assert frame.title() != MARK
    assert frame.evaluate("window.__pwned") is None  # DevTools still evaluates where page script may not


def test_the_payload_runs_in_an_unprotected_page(browser: Browser, probe: Probe) -> None:
    context = browser.new_context()
    try:
        bare = context.new_page()
        bare.set_content(payload(probe.url))
        bare.wait_for_load_state("networkidle")
        assert bare.title() == MARK and (bare.evaluate("window.__pwned") or 0) >= 2
        assert {"/script", "/onerror", "/pixel.gif"} <= set(probe.paths)
    finally:
        context.close()


def check_page(operator: Operator, name: str) -> None:
    """The page open now shows the message's HTML in its frame, and nothing of the payload ran, even on a click."""
    page = operator.page
    title = page.title()
    assert MARK not in title
    frame = message_frame(page)
    link = page.frame_locator("#message-html").get_by_text("open the figures")
    assert link.get_attribute("href") is None  # the sanitizer dropped the javascript: URL
    link.click()
    page.wait_for_load_state("networkidle")
    operator.shoot(f"{name} after clicking the link")
    nothing_ran(page, title)
    frame_ran_nothing(frame)
    assert MARK not in page.content() and "onerror" not in frame.content() and "<script" not in frame.content()


def test_script_in_a_message_runs_neither_on_the_decision_page_nor_in_quarantine(
        operator: Operator, stack: Stack, probe: Probe) -> None:
    html = payload(probe.url)
    assert stack.send("ann@example.net", "Figures", "See the HTML part.\r\n", html=html) == 250
    assert stack.send("hal@held.example", "Held figures", "See the HTML part.\r\n", html=html) == 250
    page = operator.login(ADMIN_TOKEN)
    operator.visit("/ui/decisions", "decisions")
    operator.submit(page.locator("tr.decision", has_text="ann@example.net").locator("a").first, "decision page")
    check_page(operator, "decision page")
    operator.visit("/ui/quarantine", "quarantine")
    operator.submit(page.locator("tr.held").first.locator("a.read"), "held message")
    check_page(operator, "held message")
    assert probe.paths == []  # no script called home, no remote picture was fetched
