"""``capture``: nothing leaves the machine; mail to a local agent goes through that agent's inbound gate.

The Sent copy (kept by the caller when the message was queued) is the record
of what was sent elsewhere: for those recipients the outcome is simply
``sent``. A recipient that is an agent of this appliance gets the message as
if it had come in by SMTP from 127.0.0.1 (``intake="local"``): the gate
decides for it like for any sender, and its decision is the peer's answer:
accepted (or quarantined, or dropped: the gate took it) is sent, bounce is a
final refusal, tempfail a temporary one.
"""

from __future__ import annotations

__all__ = ["CaptureTransport"]

import logging

from appliance.gate import Envelope
from appliance.inbound.reception import Reception
from appliance.inbound.replies import smtp_reply
from appliance.outbound.model import Delivery, DeliveryOutcome, RecipientRefusal

log = logging.getLogger("appliance.outbound")


class CaptureTransport:
    """Keeps mail on the machine; hands mail for local agents to ``reception``."""

    name = "capture"

    def __init__(self, reception: Reception | None, *, hostname: str) -> None:
        self.reception = reception
        self.hostname = hostname

    async def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        reception = self.reception
        local = [r for r in delivery.recipients if reception is not None and reception.is_agent(r)]
        refused: list[RecipientRefusal] = []
        replies: list[str] = []
        for agent in local:
            assert reception is not None
            envelope = Envelope(client_ip="127.0.0.1", helo=self.hostname, mail_from=delivery.mail_from,
                                rcpt_to=[agent.lower()])
            try:
                received = await reception.receive(envelope, delivery.raw, agent=agent, intake="local")
            except Exception as exc:  # not decided, not recorded: as a 451 would say, try again later
                log.exception("local delivery of %s to %s failed", delivery.email_id, agent)
                refused.append(RecipientRefusal(address=agent, code=None,
                                                detail=f"local delivery failed: {type(exc).__name__}: {exc}"))
                continue
            decision = received.decision
            answer = smtp_reply(decision)
            reply = answer.line()
            if decision.action in ("bounce", "tempfail"):
                why = f" ({decision.reason}: {decision.detail})" if decision.reason else ""
                refused.append(RecipientRefusal(address=agent, code=answer.code, detail=reply + why))
            else:
                replies.append(f"<{agent}> {reply}")
        others = [r for r in delivery.recipients if r not in local]
        if len(refused) == len(delivery.recipients):
            final = all(r.code is not None and 500 <= r.code < 600 for r in refused)
            detail = "; ".join(f"<{r.address}> {r.detail}" for r in refused)
            return DeliveryOutcome(status="failed" if final else "retry", code=refused[-1].code, detail=detail,
                                   peer="local", refused=refused)
        if others:
            replies.append(f"{len(others)} recipient(s) captured: kept in the Sent mailbox, nothing left the machine")
        return DeliveryOutcome(status="sent", code=250, detail="; ".join(replies),
                               peer="local" if local else "capture", refused=refused)

    async def aclose(self) -> None:
        """Nothing runs in the background."""
