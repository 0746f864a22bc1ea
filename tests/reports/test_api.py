"""``GET /api/v1/reports/dmarc``: the per-sender summary, for the admin only."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from appliance.reports import take_report
from tests.api.conftest import ADMIN, AGENT_KEY, runtime_of
from tests.api.conftest import client as client  # the fixture
from tests.reports.samples import google, microsoft, report_message

Client = AsyncTestClient  # type: ignore[type-arg]


async def test_the_summary_lists_senders_with_their_results(client: Client) -> None:
    db = runtime_of(client).db
    for text in (google(), microsoft()):
        await take_report(db, report_message(text.encode(), "text/xml", as_body=True))
    response = await client.get("/api/v1/reports/dmarc", headers=ADMIN)
    assert response.status_code == 200, response.text
    rows = {r["source_ip"]: r for r in response.json()}
    assert rows["203.0.113.5"]["dmarc_pass"] == 12
    assert rows["198.51.100.77"]["dmarc_fail"] == 3
    recent = await client.get("/api/v1/reports/dmarc", params={"since": "2025-01-02T00:00:00Z"}, headers=ADMIN)
    assert {r["source_ip"] for r in recent.json()} == {"2001:db8::25", "192.0.2.66"}


async def test_the_summary_is_for_the_admin_only(client: Client) -> None:
    assert (await client.get("/api/v1/reports/dmarc", headers=AGENT_KEY)).status_code in (401, 403)
    assert (await client.get("/api/v1/reports/dmarc")).status_code == 401
