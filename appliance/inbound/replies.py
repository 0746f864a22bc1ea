"""What a sending server is told for a gate decision: the SMTP reply (RFC 5321 code, RFC 3463 enhanced code).

The gate decides an action and a reason and knows nothing of SMTP; every
adapter that answers a client in SMTP terms (the embedded server, Stalwart's
MTA hook, the capture transport handing agent-to-agent mail to the gate, and
``appliance policy explain``) asks here, so they all say the same thing.
"""

from __future__ import annotations

__all__ = ["SmtpReply", "smtp_reply"]

import msgspec

from appliance.gate import reasons
from appliance.gate.decision import Decision
from appliance.policy import Action


class SmtpReply(msgspec.Struct, frozen=True, kw_only=True):
    """The reply the sending server gets."""

    code: int
    enhanced: str
    text: str

    def line(self) -> str:
        """The reply as one SMTP line, e.g. ``550 5.7.1 Sender is not allowed to reach this agent``."""
        return f"{self.code} {self.enhanced} {self.text}"


_ACCEPTED = SmtpReply(code=250, enhanced="2.0.0", text="Message accepted")
_BY_REASON: dict[str, SmtpReply] = {
    reason: SmtpReply(code=code, enhanced=enhanced, text=text)
    for reason, code, enhanced, text in [
        (reasons.SENDER_NOT_ALLOWED, 550, "5.7.1", "Sender is not allowed to reach this agent"),
        (reasons.DKIM_REQUIRED, 550, "5.7.1", "A DKIM signature aligned with the From domain is required"),
        (reasons.SPF_REQUIRED, 550, "5.7.1", "SPF must pass for an envelope domain aligned with the From domain"),
        (reasons.DMARC_REQUIRED, 550, "5.7.1", "DMARC must pass for the From domain"),
        (reasons.MALFORMED_MESSAGE, 550, "5.6.0", "Malformed message"),
        (reasons.MESSAGE_TOO_LARGE, 552, "5.3.4", "Message too big for this agent"),  # RFC 1870
        (reasons.MESSAGE_TOO_COMPLEX, 550, "5.6.0", "Message too complex to read"),
        (reasons.RATE_LIMITED, 451, "4.7.1", "Rate limit exceeded, try again later"),
        (reasons.TOKEN_BUDGET_EXHAUSTED, 550, "5.7.1", "Token budget exhausted"),
        (reasons.DNS_TEMPORARY_FAILURE, 451, "4.4.3", "Temporary DNS failure, try again later"),  # RFC 3463
    ]
}
_BY_ACTION: dict[Action, SmtpReply] = {
    "bounce": SmtpReply(code=550, enhanced="5.7.1", text="Message rejected by policy"),
    "tempfail": SmtpReply(code=451, enhanced="4.7.1", text="Message deferred by policy, try again later"),
}


def smtp_reply(decision: Decision) -> SmtpReply:
    """The reply for ``decision``: 250 for whatever the appliance takes (accept, quarantine, and drop, which
    must look accepted to the sender), 5xx for a bounce, 4xx for a tempfail.

    A reason's own reply is used only when its class matches the action (a policy may bounce what is
    usually a tempfail, and the sender must then see a 5xx).
    """
    action = decision.action
    if action in ("accept", "quarantine", "drop"):
        return _ACCEPTED
    if action == "bounce" and decision.guard is not None:
        return SmtpReply(code=550, enhanced="5.7.1",
                         text=f"Message rejected by content policy ({decision.guard.reason})")
    by_reason = _BY_REASON.get(decision.reason or "")
    if by_reason is not None and by_reason.code // 100 == (5 if action == "bounce" else 4):
        return by_reason
    return _BY_ACTION[action]
