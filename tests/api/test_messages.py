"""What an event points at, fetched with the agent's key: whole body, raw bytes, attachments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.gate import Envelope
from tests.api.conftest import runtime_of
from tests.conftest import AGENT

MINE = {"Authorization": "Bearer messages-agent-key"}
THEIRS = {"Authorization": "Bearer messages-other-key"}
PDF = b"%PDF-1.4 fake pdf bytes \x00\x01\x02"
LONG = "All work and no play makes Jack a dull boy. " * 5


@pytest.fixture
async def client(make_config: Callable[..., ApplianceConfig],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    monkeypatch.setenv("TEST_MESSAGES_AGENT_KEY", "messages-agent-key")
    monkeypatch.setenv("TEST_MESSAGES_OTHER_KEY", "messages-other-key")
    config = make_config(delivery={"max_body_chars": 40})
    agents = [msgspec.structs.replace(a, api_key_env=env) for a, env in
              zip(config.agents, ["TEST_MESSAGES_AGENT_KEY", "TEST_MESSAGES_OTHER_KEY"], strict=True)]
    async with AsyncTestClient(app=create_app(msgspec.structs.replace(config, agents=agents))) as test_client:
        yield test_client


def mail(sender: str = "alice@example.net") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = AGENT
    msg["Subject"] = "Report"
    msg["Message-ID"] = "<report@example.net>"
    msg.set_content(LONG)
    msg.add_alternative(f"<p>{LONG}</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes()


async def receive(client: AsyncTestClient, raw: bytes, sender: str) -> tuple[str, dict[str, object]]:  # type: ignore[type-arg]
    runtime = runtime_of(client)
    env = Envelope(client_ip="192.0.2.1", helo="mail.example.net", mail_from=sender, rcpt_to=[AGENT])
    received = await runtime.reception.receive(env, raw, agent=AGENT, intake="smtp")
    assert received.email_id is not None
    email_id = received.email_id
    payload = await runtime.db.read(lambda con: con.execute(
        "SELECT payload FROM deliveries WHERE email_id = ? AND event_type = 'message.received'",
        [email_id]).fetchone())
    assert payload is not None
    return email_id, json.loads(payload[0])


async def test_a_cut_body_is_flagged_and_the_whole_is_fetched(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    _, data = await receive(client, mail(), "alice@example.net")
    assert data["textTruncated"] is True and len(str(data["text"])) == 40
    assert data["htmlTruncated"] is True
    body = (await client.get(str(data["bodyPath"]), headers=MINE)).json()
    assert body["text"].strip() == LONG.strip() and LONG.strip() in body["html"]
    raw = await client.get(str(data["rawPath"]), headers=MINE)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("message/rfc822")
    assert raw.content.startswith(b"Authentication-Results:") and b"Subject: Report" in raw.content


async def test_attachments_are_metadata_with_a_download_path(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    _, data = await receive(client, mail(), "alice@example.net")
    attachments = data["attachments"]
    assert isinstance(attachments, list) and len(attachments) == 1
    attachment: dict[str, object] = attachments[0]
    assert attachment == {"index": 0, "filename": "report.pdf", "contentType": "application/pdf", "size": len(PDF),
                          "downloadPath": attachment["downloadPath"]}
    got = await client.get(str(attachment["downloadPath"]), headers=MINE)
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert 'filename="report.pdf"' in got.headers["content-disposition"]
    email_id = data["emailId"]
    assert (await client.get(f"/api/v1/messages/{email_id}/attachments/1", headers=MINE)).status_code == 404


async def test_an_agent_reads_only_its_own_released_messages(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id, _ = await receive(client, mail(), "alice@example.net")
    assert (await client.get(f"/api/v1/messages/{email_id}/raw", headers=THEIRS)).status_code == 404
    assert (await client.get(f"/api/v1/messages/{email_id}/raw")).status_code == 401
    assert (await client.get("/api/v1/messages/e-nope/raw", headers=MINE)).status_code == 404
    held_id, _ = await receive(client, mail("mallory@held.example"), "mallory@held.example")
    assert (await client.get(f"/api/v1/messages/{held_id}/raw", headers=MINE)).status_code == 404
    assert (await client.get(f"/api/v1/messages/{held_id}/body", headers=MINE)).status_code == 404
