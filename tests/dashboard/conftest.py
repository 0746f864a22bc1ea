"""The dashboard fixture: a real sandbox appliance over loopback HTTP and SMTP (see ``tests.dashboard.app``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from appliance.config import ApplianceConfig
from tests.dashboard.app import ADMIN_TOKEN, DashboardApp, serve_dashboard


@pytest.fixture
def dashboard(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> Iterator[DashboardApp]:
    """A running appliance in sandbox mode over the shared test policy (``tests.conftest.POLICY``)."""
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", ADMIN_TOKEN)
    with serve_dashboard(make_config(mode="sandbox")) as app:
        yield app
