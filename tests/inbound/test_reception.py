"""The shared receive path: decide, then commit the audit row, the message and its delivery job."""

from __future__ import annotations

from appliance.audit import verify_chain
from appliance.gate import Envelope
from appliance.runtime import Runtime
from tests.conftest import AGENT


def envelope(sender: str) -> Envelope:
    return Envelope(client_ip="192.0.2.10", helo="mx.example.net", mail_from=sender, rcpt_to=[AGENT])


async def test_eight_bit_message_id_is_decided_and_recorded_not_deferred_for_ever(runtime: Runtime) -> None:
    raw = (f"From: a@example.net\r\nTo: {AGENT}\r\nSubject: hi\r\n".encode()
           + b"Message-ID: <caf\xe9@example.net>\r\nReferences: <\xff@example.net>\r\n\r\nbody\r\n")
    received = await runtime.reception.receive(envelope("a@example.net"), raw, agent=AGENT, intake="smtp")
    assert received.decision.action == "accept" and received.delivery_id is not None
    row = await runtime.db.read(lambda con: con.execute(
        "SELECT message_id FROM decisions WHERE decision_id = ?", [received.decision.decision_id]).fetchone())
    assert row == ("<caf\ufffd@example.net>",)
    assert (await runtime.db.read(verify_chain)).ok


async def test_a_dsn_for_the_agents_sent_mail_raises_message_bounced_whatever_the_gate_decides(
        runtime: Runtime) -> None:
    from tests.outbound.conftest import events_of, outbound, queue
    from tests.outbound.test_dsn import POSTFIX

    message = outbound(1, ["bob@example.org", "carol@example.org"])
    await queue(runtime.db, message, 1_800_000_000.0)
    report = POSTFIX.replace(b"To: agent@example.test", f"To: {AGENT}".encode())
    received = await runtime.reception.receive(
        Envelope(client_ip="192.0.2.25", helo="mail.example.org", mail_from="", rcpt_to=[AGENT]), report,
        agent=AGENT, intake="smtp")
    assert received.decision.action != "accept"  # a DSN never reaches the agent as mail
    kinds = [kind for kind, _ in await events_of(runtime.db)]
    assert "message.bounced" in kinds
