"""Step 5: automatic mail (bounces, auto-replies, lists) and mail from the agent itself."""

from __future__ import annotations

__all__ = ["automatic_mail_reason"]

from appliance.gate.decision import Envelope
from appliance.mail import MessageBytes, ParsedMessage

_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})


def _values(message: MessageBytes, name: str) -> list[str]:
    """Every copy of a header, unfolded, lowercased, comments left in (they never start a value)."""
    return [" ".join(v.decode("utf-8", "replace").split()).lower() for v in message.get_all(name)]


def automatic_mail_reason(parsed: ParsedMessage, message: MessageBytes, envelope: Envelope,
                          agent: str) -> str | None:
    """Why this message must not be dispatched as ordinary mail, or None when it may."""
    if envelope.mail_from == "":
        return "null envelope sender (a bounce or other notification, RFC 5321 4.5.5)"
    report_type = parsed.report_type
    if parsed.content_type == "multipart/report" and report_type in ("delivery-status", "disposition-notification"):
        return f"{report_type} report (RFC 3464 / RFC 8098)"
    # Every copy of a header counts: a leading "Auto-Submitted: no" must not hide a second one.
    for auto in _values(message, "Auto-Submitted"):
        if auto and auto.split(";")[0].split("(")[0].strip() != "no":
            return f"Auto-Submitted: {auto} (RFC 3834)"
    for precedence in _values(message, "Precedence"):
        if precedence.split("(")[0].strip() in _BULK_PRECEDENCE:
            return f"Precedence: {precedence}"
    if message.get_all("X-Auto-Response-Suppress"):
        return "X-Auto-Response-Suppress present (automatic message)"
    if parsed.sender.address == agent or envelope.mail_from.lower() == agent:
        return "message from the agent's own address"
    return None
