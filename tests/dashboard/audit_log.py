"""What the appliance recorded, read through its own admin SQL API (the test never opens the file it holds)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.dashboard.app import ADMIN_TOKEN, DashboardApp


def sql(dashboard: DashboardApp, query: str) -> list[list[Any]]:
    """Rows of a read-only query over the running appliance's database."""
    answer = httpx.post(f"{dashboard.url}/api/v1/audit/sql", json={"sql": query},
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    rows: list[list[Any]] = answer.json()["rows"]
    return rows


def events(dashboard: DashboardApp, kind: str) -> list[tuple[str, str]]:
    """(agent, detail) of every audit event of type ``kind``, oldest first."""
    return [(str(a), str(d)) for a, d in sql(
        dashboard, f"SELECT agent, detail FROM events WHERE type = '{kind}' ORDER BY ts")]
