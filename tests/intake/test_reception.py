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
