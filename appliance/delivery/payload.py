"""What an agent receives: the webhook / event-stream payloads (a contract: camelCase keys).

The wire types are the SDK's (``appliance.sdk``), so the appliance and its
agents cannot drift apart; this module builds them from a decision.
"""

from __future__ import annotations

__all__ = [
    "EVENT_TYPES",
    "AttachmentInfo",
    "DeliveryFailedData",
    "EndpointDisabledData",
    "EventData",
    "MessageData",
    "QuarantineData",
    "encode_event",
    "message_data",
    "quarantine_data",
]

from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from appliance.gate.decision import Decision
from appliance.mail import ParsedMessage, ReadableText
from appliance.sdk import (
    Attachment,
    Auth,
    DeliveryFailed,
    DeliveryFailedData,
    EndpointDisabled,
    EndpointDisabledData,
    MessageBounced,
    MessageBouncedData,
    MessageData,
    MessageQuarantined,
    MessageReceived,
    MessageSent,
    MessageSentData,
    QuarantineData,
)

AttachmentInfo = Attachment

EventData = (MessageData | QuarantineData | DeliveryFailedData | EndpointDisabledData | MessageSentData
             | MessageBouncedData)

_Envelope = (MessageReceived | MessageQuarantined | DeliveryFailed | EndpointDisabled | MessageSent
             | MessageBounced)
EVENT_TYPES: dict[str, type[_Envelope]] = {
    "message.received": MessageReceived,
    "message.quarantined": MessageQuarantined,
    "delivery.failed": DeliveryFailed,
    "endpoint.disabled": EndpointDisabled,
    "message.sent": MessageSent,
    "message.bounced": MessageBounced,
}
"""Event type -> its envelope Struct (whose ``data`` field is the row's payload)."""

_DATA_TYPES: dict[str, type[EventData]] = {
    "message.received": MessageData,
    "message.quarantined": QuarantineData,
    "delivery.failed": DeliveryFailedData,
    "endpoint.disabled": EndpointDisabledData,
    "message.sent": MessageSentData,
    "message.bounced": MessageBouncedData,
}


def encode_event(event_type: str, created_at: datetime, payload: str | bytes,
                 capability_token: Callable[[MessageData], str] | None = None) -> bytes:
    """The body sent for a delivery row: ``{"type", "timestamp", "data"}``.

    ``capability_token`` makes the token of a ``message.received`` (issued at send time).
    """
    envelope_type = EVENT_TYPES[event_type]
    data = msgspec.json.decode(payload, type=_DATA_TYPES[event_type])
    if capability_token is not None and isinstance(data, MessageData):
        data = msgspec.structs.replace(data, capability_token=capability_token(data))
    return msgspec.json.encode(envelope_type(timestamp=_aware(created_at), data=data))  # type: ignore[arg-type]


def message_data(decision: Decision, parsed: ParsedMessage, readable: ReadableText, *, email_id: str,
                 received_at: datetime, max_body_chars: int) -> MessageData:
    """Build the ``message.received`` data for a stored message (``received_at`` naive UTC or aware)."""
    text = readable.agent_text
    html = readable.html
    attachments = [Attachment(index=a.index, filename=a.filename, content_type=a.content_type, size=a.size,
                              download_path=f"/api/v1/messages/{email_id}/attachments/{a.index}")
                   for a in parsed.attachments]
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
        received_at=_aware(received_at),
        text=text[:max_body_chars],
        text_truncated=len(text) > max_body_chars,
        html=html[:max_body_chars] if html is not None else None,
        html_truncated=html is not None and len(html) > max_body_chars,
        body_path=f"/api/v1/messages/{email_id}/body",
        raw_path=f"/api/v1/messages/{email_id}/raw",
        attachments=attachments,
        auth=Auth(spf=decision.auth.spf, dkim=decision.auth.dkim, dmarc=decision.auth.dmarc),
        capabilities=list(decision.capabilities),
        budget=decision.budget_remaining,
    )


def quarantine_data(*, agent: str, decision_id: str, email_id: str, sender: str, received_at: datetime,
                    reason: str | None) -> QuarantineData:
    """The ``message.quarantined`` notice: that a message was held and why, never its content."""
    return QuarantineData(agent=agent, decision_id=decision_id, email_id=email_id, sender=sender,
                          received_at=_aware(received_at), reason=reason)


def _aware(moment: datetime) -> datetime:
    """Database timestamps are naive UTC; on the wire they carry their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
