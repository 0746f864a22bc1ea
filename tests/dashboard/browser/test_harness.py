"""The harness itself: chromium over Playwright reaches the real appliance and keeps screenshots."""

from __future__ import annotations

import pytest

from tests.dashboard.browser.operator import Operator

pytestmark = pytest.mark.browser


def test_the_api_schema_page_renders_swagger_ui_from_the_appliance(operator: Operator) -> None:
    page = operator.visit("/schema", "api schema")
    page.locator(".swagger-ui .info .title").wait_for(state="visible")
    assert "appliance" in page.locator(".swagger-ui .info .title").inner_text().lower()
    assert operator.taken and all(shot.stat().st_size > 0 for shot in operator.taken)
