"""An operator at the dashboard: a Playwright page that keeps a screenshot of every page it shows.

Each test gets its own folder under the run's screenshot directory; every navigation made through
``Operator`` (``visit``, ``submit``, ``login``) is followed by a full-page screenshot, numbered in
the order they were taken, so a person can look through what the test saw.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Locator, Page


class Operator:
    """``visit(path)``, ``submit(button)``, ``login(token)``; ``shoot(name)`` for a state worth keeping."""

    def __init__(self, page: Page, base_url: str, shots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.shots = shots
        self.taken: list[Path] = []

    def shoot(self, name: str) -> Path:
        """A full-page screenshot of what the page shows now, as ``NN-name.png``."""
        self.shots.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "page"
        path = self.shots / f"{len(self.taken) + 1:02d}-{slug}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path

    def visit(self, path: str, name: str | None = None) -> Page:
        """Open ``path`` (relative to the appliance) and keep a screenshot of it."""
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.ok, f"GET {path}: {response.status if response else 'no answer'}"
        self.page.wait_for_load_state("load")
        self.shoot(name or path)
        return self.page

    def submit(self, control: Locator, name: str) -> Page:
        """Click ``control`` (a button or link that leads to another page), wait for it, keep a screenshot."""
        with self.page.expect_navigation():
            control.click()
        self.page.wait_for_load_state("load")
        self.shoot(name)
        return self.page

    def login(self, token: str) -> Page:
        """Log in through the dashboard's form with ``token``; lands on the overview."""
        self.visit("/ui/login", "login")
        self.page.locator("#token").fill(token)
        return self.submit(self.page.locator("#login-submit"), "overview after login")
