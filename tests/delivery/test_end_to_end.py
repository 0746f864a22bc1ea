"""SMTP in, signed webhook out: a real Runtime with sandbox mode's SMTP listener, and a real receiver."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import aiosmtplib
import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from appliance.config import ApplianceConfig
from appliance.inbound import quarantine
from appliance.modes.sandbox import SandboxMode
from appliance.runtime import Runtime
from appliance.sdk import MessageQuarantined, MessageReceived, verify_webhook
from tests.conftest import AGENT
from tests.delivery.conftest import SECRET, SECRET_ENV, eventually
from tests.delivery.receiver import WebhookReceiver

_PORTS: dict[int, int] = {}
"""The SMTP port of each runtime the fixture started."""


@pytest.fixture
async def appliance(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch
                    ) -> AsyncIterator[tuple[Runtime, WebhookReceiver]]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with WebhookReceiver() as receiver:
        config = make_config(mode="sandbox", smtp={"listen": "127.0.0.1:0"})
        first = msgspec.structs.replace(config.agents[0], webhook_url=receiver.url, webhook_secret_env=SECRET_ENV)
        runtime = Runtime(msgspec.structs.replace(config, agents=[first, *config.agents[1:]]))
        mode = SandboxMode(runtime)
        await runtime.start()
        try:
            await mode.start_intake()
            assert mode.smtp_server is not None
            _PORTS[id(runtime)] = mode.smtp_server.port
            yield runtime, receiver
        finally:
            await mode.stop_intake()
            await runtime.stop()


def mail(sender: str, n: int) -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: {AGENT}\r\nSubject: Hello {n}\r\nMessage-ID: <e2e{n}@example.net>\r\n"
            f"Date: Mon, 6 Jan 2025 10:00:00 +0000\r\n\r\nHi there {n}.\r\n").encode()


async def send(runtime: Runtime, sender: str, n: int) -> None:
    port = _PORTS[id(runtime)]
    await aiosmtplib.send(mail(sender, n), sender=sender, recipients=[AGENT], hostname="127.0.0.1", port=port)


async def test_an_accepted_message_reaches_the_webhook_signed_at_once(
        appliance: tuple[Runtime, WebhookReceiver]) -> None:
    runtime, receiver = appliance
    started = time.monotonic()
    await send(runtime, "alice@example.net", 1)
    [got] = await receiver.arrived(1)
    assert time.monotonic() - started < 2.0
    Webhook(SECRET).verify(got.body, got.headers)
    event = verify_webhook(got.headers, got.body, SECRET)
    assert isinstance(event, MessageReceived)
    assert event.data.sender == "alice@example.net" and event.data.subject == "Hello 1"
    assert event.data.text.strip() == "Hi there 1." and event.data.capabilities == ["read"]
    assert event.data.capability_token

    async def delivered() -> bool:
        status = await runtime.db.read(lambda con: con.execute(
            "SELECT status FROM deliveries WHERE delivery_id = ?", [got.headers["webhook-id"]]).fetchone())
        return status == ("delivered",)

    await eventually(delivered)


async def test_quarantine_notifies_without_content_and_release_delivers(
        appliance: tuple[Runtime, WebhookReceiver]) -> None:
    runtime, receiver = appliance
    await send(runtime, "mallory@held.example", 2)
    [notice] = await receiver.arrived(1)
    event = verify_webhook(notice.headers, notice.body, SECRET)
    assert isinstance(event, MessageQuarantined)
    assert b"Hello 2" not in notice.body and b"Hi there" not in notice.body
    email_id = event.data.email_id

    assert await runtime.db.write(lambda con: quarantine.release(con, email_id, by="test"))
    runtime.wake_dispatcher()
    [_, released] = await receiver.arrived(2)
    message = verify_webhook(released.headers, released.body, SECRET)
    assert isinstance(message, MessageReceived) and message.data.email_id == email_id
