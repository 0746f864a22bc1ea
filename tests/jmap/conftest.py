"""A sandbox app over a real Runtime, driven in-process, with a JMAP client for each agent and the admin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.gate import Envelope
from appliance.jmap.local import account_id
from appliance.runtime import Runtime
from tests.conftest import AGENT, OTHER_AGENT

MINE = {"Authorization": "Bearer jmap-agent-key"}
THEIRS = {"Authorization": "Bearer jmap-other-key"}
ADMIN = {"Authorization": "Bearer jmap-admin-token"}
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission",
         "urn:appliance:jmap"]
ACCOUNT = account_id(AGENT)
OTHER_ACCOUNT = account_id(OTHER_AGENT)


def jmap_config(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch,
                **overrides: Any) -> ApplianceConfig:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "jmap-admin-token")
    monkeypatch.setenv("TEST_JMAP_AGENT_KEY", "jmap-agent-key")
    monkeypatch.setenv("TEST_JMAP_OTHER_KEY", "jmap-other-key")
    config = make_config(**overrides)
    agents = [msgspec.structs.replace(a, api_key_env=env) for a, env in
              zip(config.agents, ["TEST_JMAP_AGENT_KEY", "TEST_JMAP_OTHER_KEY"], strict=True)]
    return msgspec.structs.replace(config, agents=agents)


@pytest.fixture
async def client(make_config: Callable[..., ApplianceConfig],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=create_app(jmap_config(make_config, monkeypatch))) as test_client:
        yield test_client


def runtime_of(client: AsyncTestClient) -> Runtime:  # type: ignore[type-arg]
    runtime: Runtime = client.app.state.runtime
    return runtime


def message(sender: str = "alice@example.net", *, subject: str = "Report", text: str = "Hello there",
            html: str | None = None, attachment: bytes | None = None, message_id: str | None = None,
            in_reply_to: str | None = None, to: str = AGENT, extra: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes()


async def deliver(client: AsyncTestClient, raw: bytes, *, sender: str = "alice@example.net",  # type: ignore[type-arg]
                  agent: str = AGENT) -> str | None:
    """Through the gate, as the SMTP intake does; the stored email id (None when not stored)."""
    runtime = runtime_of(client)
    envelope = Envelope(client_ip="192.0.2.1", helo="mail.example.net", mail_from=sender, rcpt_to=[agent])
    received = await runtime.reception.receive(envelope, raw, agent=agent, intake="smtp")
    return received.email_id


async def jmap(client: AsyncTestClient, calls: list[list[Any]], headers: dict[str, str] = MINE,  # type: ignore[type-arg]
               using: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/jmap", json={"using": using or USING, "methodCalls": calls, **extra},
                                 headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def call(client: AsyncTestClient, name: str, args: dict[str, Any],  # type: ignore[type-arg]
               headers: dict[str, str] = MINE, account: str = ACCOUNT) -> tuple[str, dict[str, Any]]:
    """One method call: (response name, response arguments)."""
    body = await jmap(client, [[name, {"accountId": account, **args}, "c0"]], headers)
    name_, answer, _ = body["methodResponses"][0]
    return name_, answer
