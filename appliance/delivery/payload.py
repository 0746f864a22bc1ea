"""What an agent receives: the webhook / event-stream payloads (a contract: camelCase keys)."""

from __future__ import annotations

__all__ = ["AttachmentInfo", "MessageData", "QuarantineData", "message_data"]

from datetime import datetime

import msgspec

from appliance.gate.decision import AuthSummary, Decision
from appliance.guards import ReadableText
from appliance.message import ParsedMessage


class AttachmentInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """An attachment's metadata; the bytes are fetched from ``download_path`` with the agent's key."""

    index: int
    filename: str | None
    content_type: str
    size: int
    download_path: str


class MessageData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of a ``message.received`` event."""

    agent: str
    decision_id: str
    email_id: str
    thread_id: str
    message_id: str | None
    sender: str = msgspec.field(name="from")
    to: list[str]
    cc: list[str]
    subject: str
    received_at: str
    text: str
    """What the agent should read: the text/plain body, or the HTML body reduced to text."""
    text_truncated: bool
    html: str | None
    html_truncated: bool
    body_path: str
    """Where the whole message can be fetched (when a body was cut, or for the raw bytes)."""
    attachments: list[AttachmentInfo]
    auth: AuthSummary
    capabilities: list[str]
    budget: int | None
    """Tokens left in the tightest budget of the sender's rule; null when none applies."""
    capability_token: str = ""
    """Filled in at send time: it is short-lived."""


class QuarantineData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of a ``message.quarantined`` event: metadata only, never content."""

    agent: str
    decision_id: str
    email_id: str
    sender: str = msgspec.field(name="from")
    subject: str
    received_at: str
    reason: str | None


def message_data(decision: Decision, parsed: ParsedMessage, readable: ReadableText, *, email_id: str,
                 received_at: datetime, max_body_chars: int) -> MessageData:
    """Build the ``message.received`` data for a stored message."""
    text = readable.agent_text
    html = readable.html
    attachments = []
    for index, part in enumerate(parsed.email.iter_attachments()):
        payload = part.get_payload(decode=True)
        attachments.append(AttachmentInfo(
            index=index,
            filename=part.get_filename(),
            content_type=part.get_content_type(),
            size=len(payload) if isinstance(payload, bytes) else 0,
            download_path=f"/api/v1/messages/{email_id}/attachments/{index}",
        ))
    return MessageData(
        agent=decision.agent,
        decision_id=decision.decision_id,
        email_id=email_id,
        thread_id=decision.thread_id,
        message_id=parsed.message_id,
        sender=parsed.sender.address,
        to=[m.address for m in parsed.to],
        cc=[m.address for m in parsed.cc],
        subject=parsed.subject,
        received_at=received_at.isoformat() + "Z",
        text=text[:max_body_chars],
        text_truncated=len(text) > max_body_chars,
        html=html[:max_body_chars] if html is not None else None,
        html_truncated=html is not None and len(html) > max_body_chars,
        body_path=f"/api/v1/messages/{email_id}/raw",
        attachments=attachments,
        auth=decision.auth,
        capabilities=decision.capabilities,
        budget=decision.budget_remaining,
    )
