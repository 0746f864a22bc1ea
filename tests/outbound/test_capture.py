"""The capture transport: nothing leaves; mail to a local agent goes through its real inbound gate (Runtime)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest

from appliance.config import ApplianceConfig
from appliance.outbound.model import Delivery
from appliance.outbound.transports import CaptureTransport
from appliance.outbound.worker import OutboundWorker
from appliance.runtime import Runtime
from tests.conftest import AGENT, OTHER_AGENT
from tests.outbound.conftest import delivery, events_of, jobs_of, outbound, queue

STRICT_AGENT = "strict@example.test"
OPEN = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.test" }
capabilities = ["read"]
rateLimit = { perMinute = 1 }
"""
"""Agents of this appliance may write to it, once a minute."""
CLOSED = 'defaultAction = "bounce"\n'


@pytest.fixture
async def local(make_config: Callable[..., ApplianceConfig]) -> AsyncIterator[Runtime]:
    rt = Runtime(make_config(policies={AGENT: OPEN, OTHER_AGENT: OPEN, STRICT_AGENT: CLOSED}))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


async def test_mail_to_a_local_agent_passes_its_gate_and_the_rest_is_captured(local: Runtime) -> None:
    transport = CaptureTransport(local.reception, hostname=local.config.hostname)
    message = outbound(1, [OTHER_AGENT, "bob@example.org"])
    await queue(local.db, message, time.time())
    worker = OutboundWorker(local.db, transport, retry_for=local.config.outbound.retry_for)
    assert await worker.run_due() == 2
    await worker.stop()
    jobs = {j["domain"]: j for j in await jobs_of(local.db, message.email_id)}
    assert jobs["example.test"]["status"] == "sent" and jobs["example.test"]["peer"] == "local"
    assert jobs["example.org"]["status"] == "sent" and jobs["example.org"]["peer"] == "capture"
    assert "nothing left the machine" in jobs["example.org"]["last_detail"]
    inbox = await local.db.read(lambda con: con.execute(
        "SELECT m.agent, m.mailbox, m.message_id, d.intake, d.client_ip, d.helo, d.mail_from FROM messages m "
        "JOIN decisions d USING (decision_id)").fetchall())
    assert inbox == [(OTHER_AGENT, "inbox", message.message_id, "local", "127.0.0.1", local.config.hostname, AGENT)]
    received = await local.db.read(lambda con: con.execute(
        "SELECT agent FROM deliveries WHERE event_type = 'message.received'").fetchall())
    assert received == [(OTHER_AGENT,)]
    assert sorted(d["peer"] for _, d in await events_of(local.db, "message.sent")) == ["capture", "local"]


async def test_the_gates_bounce_is_final_and_its_tempfail_a_retry(local: Runtime) -> None:
    transport = CaptureTransport(local.reception, hostname=local.config.hostname)
    refused = await transport.deliver(_delivery(1, [STRICT_AGENT]))
    assert refused.status == "failed" and refused.code == 550 and "sender_not_allowed" in refused.detail
    first = await transport.deliver(_delivery(2, [OTHER_AGENT]))
    again = await transport.deliver(_delivery(3, [OTHER_AGENT]))
    assert first.status == "sent"
    assert again.status == "retry" and again.code is not None and 400 <= again.code < 500
    assert "rate_limited" in again.detail


async def test_without_a_reception_everything_is_captured() -> None:
    outcome = await CaptureTransport(None, hostname="mx.example.test").deliver(_delivery(1, [OTHER_AGENT]))
    assert outcome.status == "sent" and outcome.peer == "capture"


def _delivery(n: int, recipients: list[str]) -> Delivery:
    return delivery(n, recipients)
