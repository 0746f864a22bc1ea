from __future__ import annotations

from litestar.testing import AsyncTestClient

from appliance.gate import Envelope
from tests.api.conftest import runtime_of
from tests.conftest import AGENT


async def test_metrics_count_decisions_by_action_and_reason(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    for n, sender in enumerate(["a@example.net", "b@example.net", "z@stranger.example", "h@held.example"]):
        raw = f"From: {sender}\r\nSubject: m{n}\r\n\r\nbody\r\n".encode()
        env = Envelope(client_ip="192.0.2.1", helo="h.example", mail_from=sender, rcpt_to=[AGENT])
        await runtime_of(client).reception.receive(env, raw, agent=AGENT, intake="smtp")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert f'appliance_decisions_total{{agent="{AGENT}",action="accept",reason=""}} 2' in text
    assert f'appliance_decisions_total{{agent="{AGENT}",action="bounce",reason="sender_not_allowed"}} 1' in text
    assert "appliance_quarantined 1" in text
    assert "# TYPE appliance_db_commits_total counter" in text
