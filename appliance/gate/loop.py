"""Step 5: automatic mail (bounces, auto-replies, lists) and mail from the agent itself."""

from __future__ import annotations

__all__ = ["automatic_mail_reason"]

from appliance.gate.decision import Envelope
from appliance.message import ParsedMessage

_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})


def automatic_mail_reason(parsed: ParsedMessage, envelope: Envelope, agent: str) -> str | None:
    """Why this message must not be dispatched as ordinary mail, or None when it may."""
    msg = parsed.email
    if envelope.mail_from == "":
        return "null envelope sender (a bounce or other notification, RFC 5321 4.5.5)"
    content_type = msg.get_content_type()
    report_type = str(msg.get_param("report-type", "", header="content-type") or "").lower()
    if content_type == "multipart/report" and report_type in ("delivery-status", "disposition-notification"):
        return f"{report_type} report (RFC 3464 / RFC 8098)"
    # Every copy of a header counts: a leading "Auto-Submitted: no" must not hide a second one.
    for value in msg.get_all("Auto-Submitted") or []:
        auto = str(value or "").strip().lower()
        if auto and auto.split(";")[0].strip() != "no":
            return f"Auto-Submitted: {auto} (RFC 3834)"
    for value in msg.get_all("Precedence") or []:
        precedence = str(value or "").strip().lower()
        if precedence in _BULK_PRECEDENCE:
            return f"Precedence: {precedence}"
    if msg.get("X-Auto-Response-Suppress") is not None:
        return "X-Auto-Response-Suppress present (automatic message)"
    if parsed.sender.address == agent or envelope.mail_from.lower() == agent:
        return "message from the agent's own address"
    return None
