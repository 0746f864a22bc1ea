"""A decision's page lists what the agent sent in its thread afterwards (a reply through the agent API)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import msgspec
import pytest

from appliance.config import ApplianceConfig
from appliance.delivery.render import render_event
from tests.conftest import AGENT
from tests.dashboard.app import ADMIN_TOKEN, DashboardApp, serve_dashboard

REPLY_POLICY = """
defaultAction = "bounce"

[[senders]]
match = { domain = "example.net" }
capabilities = ["read", "send_email"]

[outbound]
allowRecipients = ["example.net"]
"""


@pytest.fixture
def replying(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> Iterator[DashboardApp]:
    """The dashboard's appliance, with an agent that has an API key and may answer example.net."""
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("TEST_DASHBOARD_AGENT_KEY", "dashboard-agent-key")
    config = make_config(mode="sandbox", policies={AGENT: REPLY_POLICY})
    agent = msgspec.structs.replace(config.agents[0], api_key_env="TEST_DASHBOARD_AGENT_KEY")
    with serve_dashboard(msgspec.structs.replace(config, agents=[agent])) as app:
        yield app


def test_a_reply_the_agent_sent_is_listed_on_the_decision_it_answers(replying: DashboardApp) -> None:
    replying.send("From: alice@example.net\r\nTo: agent@example.test\r\nSubject: Numbers?\r\n"
                  "Message-ID: <q1@example.net>\r\n\r\nCould you send them?\r\n", mail_from="alice@example.net",
                  rcpt=AGENT)
    db, dispatcher = replying.runtime.db, replying.runtime.dispatcher
    assert dispatcher is not None
    decision_id, email_id, created_at, payload = db.read_sync(lambda con: con.execute(
        "SELECT decision_id, email_id, created_at, payload FROM deliveries WHERE event_type = 'message.received'"
    ).fetchone())
    token = json.loads(render_event("message.received", created_at, payload, dispatcher.tokens))["data"][
        "capabilityToken"]  # what the agent's webhook or stream would carry
    agent = replying.client()
    sent = agent.post(f"/api/v1/messages/{email_id}/reply", json={"text": "Here they are."},
                      headers={"Authorization": "Bearer dashboard-agent-key", "X-Capability-Token": token})
    assert sent.status_code == 202, sent.text
    reply_id = sent.json()["emailId"]

    client, _ = replying.login()
    page = client.get(f"/ui/decisions/{decision_id}").text
    assert f'<tr class="reply" data-email-id="{reply_id}">' in page
    assert "alice@example.net" in page.split('id="replies"')[1]
