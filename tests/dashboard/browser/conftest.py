"""Browser tests: Debian's chromium, driven by Playwright, against a real appliance in a subprocess.

Never a browser download: Playwright is told where chromium is (``/usr/bin/chromium``, or
``$UI_CHROMIUM``); ``make test-ui`` installs Debian's package when it is missing. Screenshots of
every page a test visits are kept under ``$UI_SCREENSHOTS`` (default ``build/screenshots`` in the
repository, gitignored), one folder per test; the run prints where.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.dashboard.browser.operator import Operator
from tests.dashboard.browser.stack import Probe, Stack, running_stack

CHROMIUM = Path(os.environ.get("UI_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("UI_SCREENSHOTS") or Path(__file__).resolve().parents[3] / "build" / "screenshots")


_TAKEN: list[Path] = []
"""Every screenshot this run took (for the summary line)."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TAKEN:
        folders = len({shot.parent for shot in _TAKEN})
        terminalreporter.write_line(f"browser screenshots: {len(_TAKEN)} from {folders} test(s) under {SCREENSHOTS}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless chromium for the session (each test gets its own context: no shared cookies)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: `make test-ui` installs Debian's chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A fresh appliance (its own data directory, DNS and webhook receiver) for one test."""
    with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
def probe() -> Iterator[Probe]:
    """A server that records every request: where a hostile message's script would call home."""
    with Probe() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context; console errors are printed with the test's output."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    opened.on("console", lambda message: print(f"console {message.type}: {message.text}"))
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def operator(page: Page, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Operator]:
    """The page on the stack's appliance, its screenshots in this test's folder (emptied first)."""
    shots = SCREENSHOTS / request.node.name
    shutil.rmtree(shots, ignore_errors=True)
    who = Operator(page, stack.base_url, shots)
    try:
        yield who
    finally:
        if not page.is_closed():
            who.shoot("end")  # the last state, failed test or not
        _TAKEN.extend(who.taken)
