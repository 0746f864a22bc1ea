from __future__ import annotations

from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.gate import Envelope
from tests.api.conftest import ADMIN, AGENT_KEY, runtime_of
from tests.conftest import AGENT


async def test_metrics_count_decisions_by_action_and_reason(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    for n, sender in enumerate(["a@example.net", "b@example.net", "z@stranger.example", "h@held.example"]):
        raw = f"From: {sender}\r\nSubject: m{n}\r\n\r\nbody\r\n".encode()
        env = Envelope(client_ip="192.0.2.1", helo="h.example", mail_from=sender, rcpt_to=[AGENT])
        await runtime_of(client).reception.receive(env, raw, agent=AGENT, intake="smtp")
    response = await client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert f'appliance_decisions_total{{agent="{AGENT}",action="accept",reason=""}} 2' in text
    assert f'appliance_decisions_total{{agent="{AGENT}",action="bounce",reason="sender_not_allowed"}} 1' in text
    assert "appliance_quarantined 1" in text
    assert "# TYPE appliance_db_commits_total counter" in text


async def test_metrics_content_type_names_its_charset_once(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers.get_list("content-type") == ["text/plain; version=0.0.4; charset=utf-8"]


async def test_metrics_need_a_token_healthz_does_not(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer "})).status_code == 401
    assert (await client.get("/metrics", headers=AGENT_KEY)).status_code == 401  # an agent's key is not enough
    assert (await client.get("/healthz")).status_code == 200


async def test_a_metrics_token_reads_metrics_and_nothing_else(
        make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("TEST_METRICS_TOKEN", "scrape-me")
    config = make_config(http={"metrics_token_env": "TEST_METRICS_TOKEN"})
    scraper = {"Authorization": "Bearer scrape-me"}
    async with AsyncTestClient(app=create_app(config)) as client:
        assert (await client.get("/metrics", headers=scraper)).status_code == 200
        assert (await client.get("/metrics", headers=ADMIN)).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/api/v1/deliveries/", headers=scraper)).status_code == 401


async def test_an_unset_metrics_token_variable_leaves_only_the_admin_token(
        make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    monkeypatch.delenv("TEST_METRICS_TOKEN", raising=False)
    config = make_config(http={"metrics_token_env": "TEST_METRICS_TOKEN"})
    async with AsyncTestClient(app=create_app(config)) as client:
        assert (await client.get("/metrics", headers={"Authorization": "Bearer "})).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=ADMIN)).status_code == 200
